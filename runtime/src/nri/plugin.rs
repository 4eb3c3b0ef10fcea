//! One NRI plugin's connection: the multiplexed trunk, crustd's ttrpc client of the
//! plugin's service (connection 1) and crustd's ttrpc server of the runtime service
//! (connection 2), and the registration: the plugin's RegisterPlugin, then crustd's
//! Configure, whose answer is the set of events the plugin is sent.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use crust_proto::nri as api;
use futures::StreamExt;
use prost::Message;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;
use ttrpc::r#async::transport::{Listener, Socket};
use ttrpc::r#async::{Client, MethodHandler, Server, Service, TtrpcContext};

use super::mux::Mux;
use super::{Error, Host, VALID_EVENTS, valid_idx, valid_name};

/// How a call to a plugin failed.
#[derive(Debug)]
pub enum CallError {
    /// The plugin answered with an error status: it refuses the event.
    Refused(String),
    /// The plugin is gone, did not answer in time or answered what is not NRI: it is
    /// dropped, and the event goes on without it.
    Fatal(String),
}

/// A registered plugin.
pub struct Plugin {
    /// Its name: the one it registered with, or its file's.
    pub name: String,
    /// Its index, two digits: plugins are called in its order.
    pub idx: String,
    events: std::sync::atomic::AtomicI32,
    client: Client,
    mux: Mux,
    // Dropping the server ends its connection.
    _server: Mutex<Server>,
    // A plugin crustd started: killed when dropped.
    _child: Mutex<Option<tokio::process::Child>>,
}

/// A started plugin crustd launched from the plugin dir: its name, index and process.
pub struct Launched {
    /// From its file name `NN-name`.
    pub name: String,
    /// From its file name `NN-name`.
    pub idx: String,
    /// Its config from the config dir, if any.
    pub config: String,
    /// The process.
    pub child: tokio::process::Child,
}

/// What Configure tells a plugin.
pub struct Configure<'a> {
    /// The plugin's own config (a pre-installed plugin's conf file), else empty.
    pub config: &'a str,
    /// How long a plugin has to register.
    pub registration_timeout: Duration,
    /// How long a plugin has to answer an event.
    pub request_timeout: Duration,
}

impl Plugin {
    /// Runs the registration over `trunk`: waits for the plugin's RegisterPlugin (a
    /// launched plugin's name and index are its file's), then configures it.
    pub async fn register<S>(
        trunk: S,
        launched: Option<Launched>,
        host: Weak<dyn Host>,
        configure: &Configure<'_>,
    ) -> Result<Plugin, Error>
    where
        S: AsyncRead + AsyncWrite + Send + 'static,
    {
        let (mux, conns) = Mux::start(trunk);
        let (registered_tx, mut registered) = mpsc::channel(1);
        let mut methods: HashMap<String, Box<dyn MethodHandler + Send + Sync>> = HashMap::new();
        methods.insert(
            "RegisterPlugin".into(),
            Box::new(RegisterPlugin {
                tx: Mutex::new(Some(registered_tx)),
            }),
        );
        methods.insert(
            "UpdateContainers".into(),
            Box::new(UpdateContainers { host }),
        );
        let service = Service {
            methods,
            streams: HashMap::new(),
        };
        let listener = Listener::new(
            futures::stream::once(async move { Ok::<_, std::io::Error>(conns.runtime) })
                .chain(futures::stream::pending()),
        );
        let mut server = Server::new()
            .register_service(HashMap::from([(api::RUNTIME_SERVICE.to_owned(), service)]))
            .add_listener(listener);
        server.start().await.map_err(|e| Error::Protocol {
            plugin: "(connecting)".into(),
            message: format!("start the runtime service: {e}"),
        })?;
        let client = Client::new(Socket::new(conns.plugin));
        let who = launched.as_ref().map_or_else(
            || "(connecting)".to_owned(),
            |l| format!("{}-{}", l.idx, l.name),
        );
        let req = tokio::select! {
            r = registered.recv() => r,
            _ = tokio::time::sleep(configure.registration_timeout) => None,
            _ = mux.closed() => None,
        }
        .ok_or_else(|| Error::Protocol {
            plugin: who.clone(),
            message: format!(
                "did not register within {:?}",
                configure.registration_timeout
            ),
        })?;
        let (name, idx, config, child) = match launched {
            Some(l) => (l.name, l.idx, l.config, Some(l.child)),
            None => {
                if !valid_name(&req.plugin_name) || !valid_idx(&req.plugin_idx) {
                    return Err(Error::Protocol {
                        plugin: format!("{:?} {:?}", req.plugin_idx, req.plugin_name),
                        message: "a plugin's name is [a-zA-Z0-9_.+-]+ and its index two digits"
                            .into(),
                    });
                }
                (req.plugin_name, req.plugin_idx, String::new(), None)
            }
        };
        let plugin = Plugin {
            name,
            idx,
            events: std::sync::atomic::AtomicI32::new(0),
            client,
            mux,
            _server: Mutex::new(server),
            _child: Mutex::new(child),
        };
        let own = if config.is_empty() {
            configure.config
        } else {
            &config
        };
        let answer: api::ConfigureResponse = plugin
            .call(
                "Configure",
                &api::ConfigureRequest {
                    config: own.to_owned(),
                    runtime_name: "crust".into(),
                    runtime_version: env!("CARGO_PKG_VERSION").into(),
                    registration_timeout: configure.registration_timeout.as_millis() as i64,
                    request_timeout: configure.request_timeout.as_millis() as i64,
                    nri_version: super::NRI_VERSION.into(),
                },
                configure.request_timeout,
            )
            .await
            .map_err(|e| Error::Protocol {
                plugin: plugin.id(),
                message: format!("Configure: {e:?}"),
            })?;
        let events = if answer.events == 0 {
            VALID_EVENTS
        } else {
            answer.events
        };
        if events & !VALID_EVENTS != 0 {
            return Err(Error::Protocol {
                plugin: plugin.id(),
                message: format!("subscribed to unknown events {:#x}", events & !VALID_EVENTS),
            });
        }
        plugin
            .events
            .store(events, std::sync::atomic::Ordering::Relaxed);
        Ok(plugin)
    }

    /// `NN-name`, as logs name it.
    pub fn id(&self) -> String {
        format!("{}-{}", self.idx, self.name)
    }

    /// Whether the plugin subscribed to `event`.
    pub fn wants(&self, event: api::Event) -> bool {
        let bit = 1 << (event as i32 - 1);
        self.events.load(std::sync::atomic::Ordering::Relaxed) & bit != 0
    }

    /// Whether its connection has ended.
    pub fn is_closed(&self) -> bool {
        self.mux.is_closed()
    }

    /// A receiver that turns true once its connection has ended (or the plugin is
    /// dropped); it does not keep the plugin.
    pub fn closed_signal(&self) -> tokio::sync::watch::Receiver<bool> {
        self.mux.closed_signal()
    }

    /// Calls `method` of the plugin's service, waiting at most `timeout`.
    pub async fn call<Q: Message, A: Message + Default>(
        &self,
        method: &str,
        req: &Q,
        timeout: Duration,
    ) -> Result<A, CallError> {
        if self.is_closed() {
            return Err(CallError::Fatal("connection closed".into()));
        }
        let mut request = ttrpc::Request::new();
        request.service = api::PLUGIN_SERVICE.into();
        request.method = method.into();
        request.payload = req.encode_to_vec();
        request.timeout_nano = timeout.as_nanos().min(i64::MAX as u128) as i64;
        // The client's own timeout answers with a string; this one is typed.
        let answer = tokio::time::timeout(timeout, self.client.request(request)).await;
        match answer {
            Err(_) => Err(CallError::Fatal(format!("no answer within {timeout:?}"))),
            Ok(Err(ttrpc::Error::RpcStatus(status))) => {
                let code = status.code.value();
                let message = status.message.clone();
                // A deadline the plugin's side ran into is a late plugin's, not a refusal.
                if code == ttrpc::Code::DEADLINE_EXCEEDED as i32 {
                    Err(CallError::Fatal(format!("deadline exceeded: {message}")))
                } else {
                    Err(CallError::Refused(message))
                }
            }
            Ok(Err(e)) => Err(CallError::Fatal(e.to_string())),
            Ok(Ok(response)) => A::decode(response.payload.as_slice())
                .map_err(|e| CallError::Fatal(format!("undecodable answer to {method}: {e}"))),
        }
    }
}

/// The runtime service's RegisterPlugin: hands the first request to the registration.
struct RegisterPlugin {
    tx: Mutex<Option<mpsc::Sender<api::RegisterPluginRequest>>>,
}

#[tonic::async_trait]
impl MethodHandler for RegisterPlugin {
    async fn handler(
        &self,
        _ctx: TtrpcContext,
        req: ttrpc::Request,
    ) -> ttrpc::Result<ttrpc::Response> {
        let reg = decode::<api::RegisterPluginRequest>(&req)?;
        let tx = self.tx.lock().map(|mut t| t.take()).unwrap_or_default();
        match tx {
            Some(tx) => {
                let _ = tx.send(reg).await;
                Ok(answer(&api::Empty {}))
            }
            None => Err(ttrpc::Error::RpcStatus(ttrpc::get_status(
                ttrpc::Code::FAILED_PRECONDITION,
                "plugin already registered",
            ))),
        }
    }
}

/// The runtime service's UpdateContainers: a plugin's unsolicited updates of
/// containers' resources (and evictions); answers the updates that failed.
struct UpdateContainers {
    host: Weak<dyn Host>,
}

#[tonic::async_trait]
impl MethodHandler for UpdateContainers {
    async fn handler(
        &self,
        _ctx: TtrpcContext,
        req: ttrpc::Request,
    ) -> ttrpc::Result<ttrpc::Response> {
        let reqs = decode::<api::UpdateContainersRequest>(&req)?;
        let Some(host) = self.host.upgrade() else {
            return Err(ttrpc::Error::RpcStatus(ttrpc::get_status(
                ttrpc::Code::UNAVAILABLE,
                "crustd is shutting down",
            )));
        };
        let failed = Arc::clone(&host).update(reqs.update).await;
        host.evict(reqs.evict).await;
        Ok(answer(&api::UpdateContainersResponse { failed }))
    }
}

fn decode<M: Message + Default>(req: &ttrpc::Request) -> ttrpc::Result<M> {
    M::decode(req.payload.as_slice()).map_err(|e| {
        ttrpc::Error::RpcStatus(ttrpc::get_status(
            ttrpc::Code::INVALID_ARGUMENT,
            format!("{}: undecodable request: {e}", req.method),
        ))
    })
}

fn answer<M: Message>(m: &M) -> ttrpc::Response {
    let mut r = ttrpc::Response::new();
    r.payload = m.encode_to_vec();
    r
}
