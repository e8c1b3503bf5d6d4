//! The listening socket and the TLS settings `serve` listens with.

use std::path::Path;

use crate::StartError;

/// The listening socket, with TCP_NODELAY (which Linux passes on to accepted
/// connections): a streamed download writes its head and then its body, and
/// with Nagle's algorithm the body would wait for the client's delayed ACK.
pub(crate) fn listener(addr: std::net::SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let socket = match addr {
        std::net::SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        std::net::SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?;
    socket.set_nodelay(true)?;
    socket.bind(addr)?;
    let listener = socket.listen(2048)?.into_std()?;
    // actix registers the socket with its own runtime.
    listener.set_nonblocking(true)?;
    Ok(listener)
}

/// The TLS settings: the certificate chain and key from PEM files, and ALPN
/// offering HTTP/2 first so that cargo multiplexes its many index requests over
/// one connection.
pub(crate) fn tls_config(cert: &Path, key: &Path) -> Result<rustls::ServerConfig, StartError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let tls_err = |what: &Path, e: &dyn std::fmt::Display| {
        StartError::Tls(format!("{}: {e}", what.display()))
    };
    let chain = CertificateDer::pem_file_iter(cert)
        .map_err(|e| tls_err(cert, &e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| tls_err(cert, &e))?;
    if chain.is_empty() {
        return Err(tls_err(cert, &"no certificate in the file"));
    }
    let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| tls_err(key, &e))?;
    let mut tls = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(chain, key_der)
        .map_err(|e| tls_err(cert, &e))?;
    tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(tls)
}
