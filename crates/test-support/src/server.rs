//! An actix server on a thread and runtime of its own, as the test upstreams
//! run: it serves while a test's own runtime blocks or is gone, and stopping
//! it works from inside a test's runtime too.

use std::net::TcpListener;
use std::sync::Arc;

use actix_web::dev::ServerHandle;
use actix_web::{web, App, FromRequest, Handler, HttpServer, Responder};

/// A running server; stopped (its port refusing connections) by `stop` or
/// when dropped.
pub struct ServerThread {
    handle: ServerHandle,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl ServerThread {
    /// Serves every request on `listener` with `handler`, which gets `state`
    /// as `web::Data`; over TLS when `tls` is given. `on_connect` runs for
    /// each connection accepted (to count them).
    pub fn start<T, H, Args>(
        listener: TcpListener,
        tls: Option<rustls::ServerConfig>,
        state: Arc<T>,
        handler: H,
        on_connect: impl Fn() + Send + Sync + 'static,
    ) -> Self
    where
        T: Send + Sync + 'static,
        H: Handler<Args> + Send,
        Args: FromRequest + 'static,
        H::Output: Responder + 'static,
    {
        let (tx, rx) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            actix_web::rt::System::new().block_on(async move {
                let data = web::Data::from(state);
                let server = HttpServer::new(move || {
                    App::new()
                        .app_data(data.clone())
                        .default_service(web::to(handler.clone()))
                })
                .on_connect(move |_, _| on_connect())
                .workers(2)
                .disable_signals()
                .shutdown_timeout(1);
                let server = match tls {
                    Some(tls) => server
                        .listen_rustls_0_23(listener, tls)
                        .expect("listen with TLS"),
                    None => server.listen(listener).expect("listen"),
                }
                .run();
                tx.send(server.handle()).expect("send the server handle");
                let _ = server.await;
            })
        });
        let handle = rx.recv().expect("the server started");
        Self {
            handle,
            thread: Some(thread),
        }
    }

    /// Stops the server: its port refuses connections from now on.
    pub fn stop(&mut self) {
        let Some(thread) = self.thread.take() else {
            return;
        };
        // Its own thread and runtime: actix's handle needs a runtime to be
        // awaited, and this may be called from inside a test's runtime.
        let handle = self.handle.clone();
        let _ = std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime")
                .block_on(handle.stop(false))
        })
        .join();
        let _ = thread.join();
    }
}

impl Drop for ServerThread {
    fn drop(&mut self) {
        self.stop();
    }
}
