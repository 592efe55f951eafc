//! CURVE keys: z85 key files, the client-key allow-list, and the one check that keeps a secret
//! key out of a git work tree.
//!
//! File formats (docs/security.md, "CURVE"):
//!
//! - key pair, `PREFIX.curve`, mode 0600: `# ...` comments, then `public-key = Z85` and
//!   `secret-key = Z85` (40 z85 characters each, 32 bytes).
//! - public key, `PREFIX.curve.pub`, mode 0644: `public-key = Z85`.
//! - client-key allow-list: any number of public keys, one per line, each `public-key = Z85` or
//!   the bare 40 characters; `#` comments and blank lines ignored. The concatenation of the
//!   clients' `.pub` files is one.

use std::fmt;
use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::AuthError;

/// Longest key file read: a bound on memory taken from outside input (a client list of 16 Ki
/// keys fits).
const KEY_FILE_MAX_BYTES: u64 = 1 << 20;

/// A CURVE key pair. `Debug` never prints the secret key.
#[derive(Clone, PartialEq, Eq)]
pub struct CurveKeyPair {
    /// The public key (32 bytes).
    pub public: [u8; 32],
    secret: [u8; 32],
}

impl fmt::Debug for CurveKeyPair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CurveKeyPair")
            .field("public", &z85(&self.public))
            .field("secret", &"<secret>")
            .finish()
    }
}

fn z85(key: &[u8; 32]) -> String {
    // 32 bytes are a multiple of 4: encoding cannot fail.
    zmq::z85_encode(key).unwrap_or_default()
}

impl CurveKeyPair {
    /// A fresh key pair from libzmq (libsodium's random source).
    pub fn generate() -> Result<CurveKeyPair, AuthError> {
        if !crate::curve_available() {
            return Err(AuthError::CurveUnavailable);
        }
        let kp = zmq::CurveKeyPair::new().map_err(|source| AuthError::Zmq {
            what: "generating a CURVE key pair",
            source,
        })?;
        Ok(CurveKeyPair {
            public: kp.public_key,
            secret: kp.secret_key,
        })
    }

    /// The secret key (32 bytes), for `ZMQ_CURVE_SECRETKEY`.
    pub fn secret(&self) -> &[u8; 32] {
        &self.secret
    }

    /// The public key in z85 (40 characters).
    pub fn public_z85(&self) -> String {
        z85(&self.public)
    }
}

/// The two files [`write_key_pair`] writes for `prefix`: `PREFIX.curve` (the pair, secret) and
/// `PREFIX.curve.pub` (the public key).
pub fn key_pair_paths(prefix: &Path) -> (PathBuf, PathBuf) {
    let with = |suffix: &str| {
        let mut s = prefix.as_os_str().to_owned();
        s.push(suffix);
        PathBuf::from(s)
    };
    (with(".curve"), with(".curve.pub"))
}

/// The root of the git work tree that `path` (a file to write, or a directory) would lie in:
/// the nearest ancestor of its directory's canonical path holding a `.git` directory or file
/// (a worktree or submodule has a file), as git finds it. `None` outside any work tree.
///
/// The one check every key tool of the workspace uses before writing a secret key: one
/// `git add -A` in that tree would commit it.
pub fn git_work_tree(path: &Path) -> Option<PathBuf> {
    let dir = if path.is_dir() {
        path.to_path_buf()
    } else {
        match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        }
    };
    let dir = fs::canonicalize(dir).ok()?;
    dir.ancestors()
        .find(|d| d.join(".git").exists())
        .map(Path::to_path_buf)
}

/// Refuses to write the secret key file `secret` inside a git work tree unless `force`
/// ([`AuthError::SecretInWorkTree`]); returns the work tree's root when forced there, so the
/// caller can warn.
pub fn check_secret_location(secret: &Path, force: bool) -> Result<Option<PathBuf>, AuthError> {
    match git_work_tree(secret) {
        None => Ok(None),
        Some(root) if force => Ok(Some(root)),
        Some(root) => Err(AuthError::SecretInWorkTree {
            path: secret.to_owned(),
            root,
        }),
    }
}

/// Writes a fresh key pair to `PREFIX.curve` (mode 0600) and `PREFIX.curve.pub` (mode 0644).
/// Existing files are refused unless `overwrite` (the secret file is then set to 0600 again).
/// Does not check the location: call [`check_secret_location`] first.
pub fn write_key_pair(
    prefix: &Path,
    key: &CurveKeyPair,
    overwrite: bool,
) -> Result<(PathBuf, PathBuf), AuthError> {
    let (secret_path, public_path) = key_pair_paths(prefix);
    let public = z85(&key.public);
    let secret = z85(&key.secret);
    let pair_text = format!(
        "# CURVE key pair (z85). Secret: keep it private (mode 0600), never commit it.\n\
         public-key = {public}\nsecret-key = {secret}\n"
    );
    let public_text = format!("# CURVE public key (z85)\npublic-key = {public}\n");
    for (path, text, mode) in [
        (&secret_path, pair_text, 0o600),
        (&public_path, public_text, 0o644),
    ] {
        let io = |source| AuthError::KeyIo {
            path: path.clone(),
            source,
        };
        let mut opts = fs::OpenOptions::new();
        opts.write(true).mode(mode);
        if overwrite {
            opts.create(true).truncate(true);
        } else {
            opts.create_new(true);
        }
        let mut f = opts.open(path).map_err(io)?;
        // An overwritten file keeps its old mode: set it again.
        f.set_permissions(fs::Permissions::from_mode(mode))
            .map_err(io)?;
        f.write_all(text.as_bytes()).map_err(io)?;
        f.sync_all().map_err(io)?;
    }
    Ok((secret_path, public_path))
}

/// A bare z85 key: 40 characters that decode to 32 bytes.
fn decode_key(value: &str) -> Option<[u8; 32]> {
    if value.len() != 40 {
        return None;
    }
    zmq::z85_decode(value).ok()?.try_into().ok()
}

/// One line: `Ok(Some((name, key)))` for `public-key = Z85`, `secret-key = Z85` or a bare key
/// (named `public-key`), `Ok(None)` for a blank line or a `#` comment, `Err(())` otherwise.
/// z85 has `=` and `#` in its alphabet: a bare key is recognised first, by its length.
#[allow(clippy::result_unit_err)]
fn parse_key_line(line: &str) -> Result<Option<(&'static str, [u8; 32])>, ()> {
    let line = line.trim();
    if let Some(key) = decode_key(line) {
        return Ok(Some(("public-key", key)));
    }
    if line.is_empty() || line.starts_with('#') {
        return Ok(None);
    }
    for name in ["public-key", "secret-key"] {
        if let Some(rest) = line.strip_prefix(name) {
            if let Some(value) = rest.trim_start().strip_prefix('=') {
                return decode_key(value.trim()).map(|k| Some((name, k))).ok_or(());
            }
        }
    }
    Err(())
}

fn read_key_file(path: &Path, private: bool) -> Result<Vec<(String, [u8; 32])>, AuthError> {
    let io = |source| AuthError::KeyIo {
        path: path.to_owned(),
        source,
    };
    let file = fs::File::open(path).map_err(io)?;
    if private {
        let mode = file.metadata().map_err(io)?.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(AuthError::KeyMode {
                path: path.to_owned(),
                mode,
            });
        }
    }
    let mut text = String::new();
    file.take(KEY_FILE_MAX_BYTES)
        .read_to_string(&mut text)
        .map_err(io)?;
    let mut keys = Vec::new();
    for (i, line) in text.lines().enumerate() {
        // The line is never quoted in the error: it may be a secret key.
        let parsed = parse_key_line(line).map_err(|()| AuthError::KeySyntax {
            path: path.to_owned(),
            line: i + 1,
        })?;
        if let Some((name, key)) = parsed {
            keys.push((name.to_owned(), key));
        }
    }
    Ok(keys)
}

/// Reads a key pair file (`public-key = ` and `secret-key = ` lines; mode 0600, else refused).
pub fn read_key_pair(path: &Path) -> Result<CurveKeyPair, AuthError> {
    let keys = read_key_file(path, true)?;
    let find = |n: &str| keys.iter().find(|(name, _)| name == n).map(|(_, k)| *k);
    match (find("public-key"), find("secret-key")) {
        (Some(public), Some(secret)) => Ok(CurveKeyPair { public, secret }),
        _ => Err(AuthError::KeyMissing {
            path: path.to_owned(),
            what: "a public-key and a secret-key line (a key pair written by `audit curve-keygen`)",
        }),
    }
}

/// Reads every public key of a file (a `.curve.pub` file, or a client-key allow-list). A
/// `secret-key` line is refused: a secret key does not belong in a file handed to others.
pub fn read_public_keys(path: &Path) -> Result<Vec<[u8; 32]>, AuthError> {
    let keys = read_key_file(path, false)?;
    if keys.iter().any(|(name, _)| name == "secret-key") {
        return Err(AuthError::KeyMissing {
            path: path.to_owned(),
            what: "public keys only (it holds a secret key: give the .curve.pub file)",
        });
    }
    if keys.iter().any(|(name, _)| name != "public-key") {
        return Err(AuthError::KeyMissing {
            path: path.to_owned(),
            what: "`public-key = Z85` or bare z85 lines only",
        });
    }
    Ok(keys.into_iter().map(|(_, k)| k).collect())
}

/// Reads the one public key of a file (a server's `.curve.pub`).
pub fn read_public_key(path: &Path) -> Result<[u8; 32], AuthError> {
    let keys = read_public_keys(path)?;
    match keys.as_slice() {
        [one] => Ok(*one),
        _ => Err(AuthError::KeyMissing {
            path: path.to_owned(),
            what: "exactly one public key",
        }),
    }
}

/// The client side of a CURVE link: the server's public key and this client's key pair.
#[derive(Clone, PartialEq, Eq)]
pub struct CurveClient {
    /// The server's public key: a server without the matching secret key cannot complete the
    /// handshake.
    pub server_key: [u8; 32],
    /// This client's key pair (its public key is what a server's client list holds).
    pub key: CurveKeyPair,
}

impl fmt::Debug for CurveClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CurveClient")
            .field("server_key", &z85(&self.server_key))
            .field("key", &self.key)
            .finish()
    }
}

impl CurveClient {
    /// Reads the server's public key from `server_key` and this client's key pair from `key`;
    /// without `key`, a fresh key pair is generated (enough for a server that keeps no client
    /// list).
    pub fn from_files(server_key: &Path, key: Option<&Path>) -> Result<CurveClient, AuthError> {
        let server_key = read_public_key(server_key)?;
        let key = match key {
            Some(path) => read_key_pair(path)?,
            None => CurveKeyPair::generate()?,
        };
        Ok(CurveClient { server_key, key })
    }

    /// Sets the CURVE client options on a socket (before `connect`).
    pub fn apply(&self, socket: &zmq::Socket) -> Result<(), AuthError> {
        if !crate::curve_available() {
            return Err(AuthError::CurveUnavailable);
        }
        let z = |what| move |source| AuthError::Zmq { what, source };
        crate::widen_for_curve(socket)?;
        socket
            .set_curve_serverkey(&self.server_key)
            .map_err(z("setting the CURVE server key"))?;
        socket
            .set_curve_publickey(&self.key.public)
            .map_err(z("setting the CURVE public key"))?;
        socket
            .set_curve_secretkey(&self.key.secret)
            .map_err(z("setting the CURVE secret key"))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_files_round_trip_with_private_modes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let prefix = dir.path().join("risk");
        let key = CurveKeyPair::generate().expect("curve");
        let (secret, public) = write_key_pair(&prefix, &key, false).expect("write");
        assert_eq!(
            fs::metadata(&secret).expect("meta").permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(
            fs::metadata(&public).expect("meta").permissions().mode() & 0o777,
            0o644
        );
        assert_eq!(read_key_pair(&secret).expect("pair"), key);
        assert_eq!(read_public_key(&public).expect("public"), key.public);
        // Never overwritten without asking; overwritten and private again when asked.
        let err = write_key_pair(&prefix, &key, false).expect_err("exists");
        assert!(matches!(err, AuthError::KeyIo { .. }), "{err}");
        fs::set_permissions(&secret, fs::Permissions::from_mode(0o644)).expect("chmod");
        let err = read_key_pair(&secret).expect_err("readable by others");
        assert!(err.to_string().contains("chmod 600"), "{err}");
        let other = CurveKeyPair::generate().expect("curve");
        write_key_pair(&prefix, &other, true).expect("overwrite");
        assert_eq!(read_key_pair(&secret).expect("pair"), other);
        // A secret key is not a public key file, and its text never shows in errors.
        let err = read_public_keys(&secret).expect_err("secret in a public file");
        assert!(err.to_string().contains("secret key"), "{err}");
        let z = z85(other.secret());
        assert!(!err.to_string().contains(&z));
        assert!(!format!("{other:?}").contains(&z));
    }

    #[test]
    fn client_lists_take_pub_files_and_bare_keys() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (a, b) = (
            CurveKeyPair::generate().expect("curve"),
            CurveKeyPair::generate().expect("curve"),
        );
        let list = dir.path().join("clients");
        fs::write(
            &list,
            format!(
                "# engines\npublic-key = {}\n\n{}\n",
                a.public_z85(),
                b.public_z85()
            ),
        )
        .expect("write");
        assert_eq!(
            read_public_keys(&list).expect("list"),
            vec![a.public, b.public]
        );
        let err = read_public_key(&list).expect_err("two keys");
        assert!(err.to_string().contains("exactly one"), "{err}");
        // z85 has `=` in its alphabet: a bare key starting with one is a key, not a name.
        let mut odd_key = [0u8; 32];
        odd_key[..4].copy_from_slice(&(66u32 * 85 * 85 * 85 * 85).to_be_bytes());
        let odd = zmq::z85_encode(&odd_key).expect("z85");
        assert!(odd.starts_with('='), "{odd}");
        fs::write(&list, format!("{odd}\n")).expect("write");
        assert_eq!(read_public_keys(&list).expect("list"), vec![odd_key]);
        fs::write(&list, "public-key = tooshort\n").expect("write");
        let err = read_public_keys(&list).expect_err("syntax");
        assert!(err.to_string().contains("line 1"), "{err}");
    }

    #[test]
    fn secrets_are_refused_inside_a_git_work_tree_unless_forced() {
        let dir = tempfile::tempdir().expect("tempdir");
        let outside = dir.path().join("keys").join("engine.curve");
        fs::create_dir_all(outside.parent().expect("parent")).expect("mkdir");
        assert_eq!(check_secret_location(&outside, false).expect("ok"), None);
        let repo = dir.path().join("repo");
        fs::create_dir_all(repo.join(".git")).expect("git dir");
        fs::create_dir_all(repo.join("sub")).expect("sub");
        let inside = repo.join("sub").join("engine.curve");
        let err = check_secret_location(&inside, false).expect_err("refused");
        assert!(matches!(err, AuthError::SecretInWorkTree { .. }), "{err}");
        assert!(err.to_string().contains("git add -A"), "{err}");
        let root = check_secret_location(&inside, true).expect("forced");
        assert_eq!(
            root,
            Some(fs::canonicalize(&repo).expect("canonical")),
            "the work tree's root"
        );
        // A worktree's `.git` is a file.
        let wt = dir.path().join("wt");
        fs::create_dir_all(&wt).expect("mkdir");
        fs::write(wt.join(".git"), "gitdir: elsewhere\n").expect("write");
        assert!(check_secret_location(&wt.join("k.curve"), false).is_err());
    }
}
