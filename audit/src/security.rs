//! The audit crate's sockets under the endpoint policy of [`zauth`] (see `docs/security.md`).
//!
//! Server side: a socket bound to an endpoint that is not in-process, ipc or loopback must
//! authenticate its peers through ZAP (an address allow-list, PLAIN credentials), or the
//! operator must say `insecure`. The ZAP handler belongs to the process, one per ZeroMQ
//! context ([`zauth::ZapHandler::start`]); [`bind_server`] checks that one runs before it binds
//! a socket that authenticates, because libzmq lets peers in unchecked when a socket has a ZAP
//! domain but no handler answers (an allow-list without PLAIN): the test
//! `without_a_handler_libzmq_lets_anyone_in` shows it.
//!
//! Client side: [`HandshakeWatch`] reads a socket's monitor events so that a client refused by
//! the server's ZAP handler fails at once with [`JournalError::AuthRefused`] instead of waiting
//! for a timeout (libzmq itself only retries the connection, silently).

use zauth::ServerAuth;

use crate::error::JournalError;

/// Whether a ZAP handler is bound on `ctx` (at [`zauth::ZAP_ENDPOINT`]); see
/// [`zauth::handler_running`].
pub fn zap_handler_running(ctx: &zmq::Context) -> Result<bool, JournalError> {
    Ok(zauth::handler_running(ctx)?)
}

/// Binds a server socket under `auth` and returns the bound endpoint (with the port chosen
/// for `tcp://host:*`). [`zauth::bind`] refuses a remote endpoint without authentication
/// unless `auth.insecure`, and a socket that authenticates when no ZAP handler runs on `ctx`.
pub(crate) fn bind_server(
    ctx: &zmq::Context,
    socket: &zmq::Socket,
    endpoint: &str,
    auth: &ServerAuth,
) -> Result<String, JournalError> {
    zauth::bind(ctx, socket, endpoint, auth).map_err(|e| match e {
        zauth::AuthError::Zmq { source, .. } => JournalError::zmq("bind", endpoint, source),
        zauth::AuthError::NoZapHandler(endpoint) => JournalError::NoZapHandler { endpoint },
        other => JournalError::Auth(other),
    })
}

/// Monitor events of one client socket ([`zauth::HandshakeWatch`]), with the endpoint the
/// errors name: tells a refused handshake from a silent server.
pub(crate) struct HandshakeWatch {
    watch: zauth::HandshakeWatch,
    endpoint: String,
}

impl std::fmt::Debug for HandshakeWatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HandshakeWatch")
            .field("endpoint", &self.endpoint)
            .finish()
    }
}

impl HandshakeWatch {
    /// Starts monitoring `socket` (call before it connects to `endpoint`).
    pub(crate) fn start(
        ctx: &zmq::Context,
        socket: &zmq::Socket,
        endpoint: &str,
    ) -> Result<HandshakeWatch, JournalError> {
        Ok(HandshakeWatch {
            watch: zauth::HandshakeWatch::start(ctx, socket)?,
            endpoint: endpoint.to_owned(),
        })
    }

    /// The monitor socket, to poll beside the watched one.
    pub(crate) fn socket(&self) -> &zmq::Socket {
        self.watch.socket()
    }

    /// Reads the results waiting; an authentication refusal or a mechanism mismatch is an
    /// error. A handshake closed without a reason is not final (libzmq reconnects and a later
    /// attempt reports the mismatch, see [`zauth::Handshake::Closed`]); it and a success are
    /// ignored.
    pub(crate) fn check(&self) -> Result<(), JournalError> {
        loop {
            match self.watch.next(0)? {
                None => return Ok(()),
                Some(zauth::Handshake::Refused { status }) => {
                    return Err(JournalError::AuthRefused {
                        endpoint: self.endpoint.clone(),
                        status,
                    })
                }
                Some(zauth::Handshake::MechanismMismatch) => {
                    return Err(JournalError::MechanismMismatch {
                        endpoint: self.endpoint.clone(),
                    })
                }
                Some(zauth::Handshake::Succeeded | zauth::Handshake::Closed) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn allow_only(net: &str) -> ServerAuth {
        ServerAuth {
            allow: vec![net.parse().unwrap()],
            ..ServerAuth::default()
        }
    }

    #[test]
    fn the_probe_sees_a_handler_and_leaves_no_trace() {
        let ctx = zmq::Context::new();
        assert!(!zap_handler_running(&ctx).unwrap());
        // The probe unbound itself: a real handler can still start, and is then seen.
        let handler = zauth::ZapHandler::start(&ctx, &allow_only("127.0.0.0/8")).unwrap();
        assert!(handler.is_some());
        assert!(zap_handler_running(&ctx).unwrap());
        drop(handler);
    }

    #[test]
    fn bind_server_refuses_remote_without_auth_and_auth_without_a_handler() {
        let ctx = zmq::Context::new();
        let s = ctx.socket(zmq::REP).unwrap();
        let err = bind_server(&ctx, &s, "tcp://0.0.0.0:*", &ServerAuth::default()).unwrap_err();
        assert!(err.to_string().contains("--insecure"), "{err}");
        let err =
            bind_server(&ctx, &s, "tcp://127.0.0.1:*", &allow_only("127.0.0.1/32")).unwrap_err();
        assert!(matches!(err, JournalError::NoZapHandler { .. }), "{err}");
        assert!(err.to_string().contains("ZapHandler"), "{err}");
        // In-process endpoints need no handler (ZAP does not apply to inproc).
        bind_server(&ctx, &s, "inproc://x", &allow_only("127.0.0.1/32")).unwrap();
        let insecure = ServerAuth {
            insecure: true,
            ..ServerAuth::default()
        };
        let ep = bind_server(&ctx, &s, "tcp://0.0.0.0:*", &insecure).unwrap();
        assert!(
            ep.starts_with("tcp://0.0.0.0:") && !ep.ends_with('*'),
            "{ep}"
        );
    }

    /// Why [`bind_server`] insists on a running handler: with a ZAP domain set but nobody at
    /// the ZAP endpoint, libzmq 4.3 accepts NULL-mechanism peers from any address.
    #[test]
    fn without_a_handler_libzmq_lets_anyone_in() {
        let ctx = zmq::Context::new();
        let rep = ctx.socket(zmq::REP).unwrap();
        rep.set_linger(0).unwrap();
        // zauth::bind refuses this situation...
        let err = zauth::bind(&ctx, &rep, "tcp://127.0.0.1:*", &allow_only("10.0.0.0/8"));
        assert!(matches!(err, Err(zauth::AuthError::NoZapHandler(_))));
        // ...because doing by hand what it would do shows libzmq letting anyone in.
        rep.set_zap_domain(zauth::ZAP_DOMAIN).unwrap();
        rep.bind("tcp://127.0.0.1:*").unwrap();
        let ep = rep.get_last_endpoint().unwrap().unwrap();
        let req = ctx.socket(zmq::REQ).unwrap();
        req.set_linger(0).unwrap();
        req.connect(&ep).unwrap();
        req.send(&b"in"[..], 0).unwrap();
        assert_eq!(rep.poll(zmq::POLLIN, 5000).unwrap(), 1, "not let in");
    }

    #[test]
    fn curve_is_in_the_default_build() {
        // docs/security.md, section 3: libzmq is built against libsodium (vendor/zmq-sys).
        assert_eq!(zmq::has("curve"), Some(true));
        assert!(zauth::curve_available());
        let ctx = zmq::Context::new();
        let s = ctx.socket(zmq::REP).unwrap();
        s.set_curve_server(true).unwrap();
        assert!(s.is_curve_server().unwrap());
        zmq::CurveKeyPair::new().unwrap();
        assert_eq!(zmq::has("ipc"), Some(true));
    }
}
