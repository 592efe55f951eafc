// Workspace copy of zmq-sys 0.12.0's build script. Upstream calls
// `zeromq_src::Build::new().with_libsodium(None)`, which compiles libzmq without CURVE
// (`zeromq-src` defines ZMQ_HAVE_CURVE only when given a libsodium location). Here libzmq is
// given the libsodium that `libsodium-sys-stable` (a dependency of this crate, `links =
// "sodium"`) built from source: its build script prints `cargo:include=` and `cargo:lib=`,
// which cargo hands to this script as DEP_SODIUM_INCLUDE and DEP_SODIUM_LIB.
use std::env;

pub fn configure() {
    println!("cargo:rerun-if-changed=build/main.rs");
    println!("cargo:rerun-if-env-changed=PROFILE");
    println!("cargo:rerun-if-env-changed=DEP_SODIUM_INCLUDE");
    println!("cargo:rerun-if-env-changed=DEP_SODIUM_LIB");

    let include = env::var("DEP_SODIUM_INCLUDE").expect(
        "DEP_SODIUM_INCLUDE is not set: libsodium-sys-stable did not report where it installed \
         libsodium's headers",
    );
    let lib = env::var("DEP_SODIUM_LIB").expect(
        "DEP_SODIUM_LIB is not set: libsodium-sys-stable did not report where it installed \
         libsodium",
    );
    zeromq_src::Build::new()
        .with_libsodium(Some(zeromq_src::LibLocation::new(lib, include)))
        .build();
}

fn main() {
    configure()
}
