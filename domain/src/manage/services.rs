//! Named services (docs/services.md): a tenant's long-running commands,
//! stored in the state database and run by the [`supervisor`](super::supervisor)
//! in the tenant's sandbox. Create, list, show, logs, start, stop, restart,
//! delete; each change audited.

use std::sync::Arc;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

use crate::state::ServiceRow;
use crate::user::UserId;

use super::service_spec::{validate_name, ServiceSpec, MAX_SERVICES_PER_USER};
use super::supervisor::{Service, ServiceStatus};
use super::{ManageError, Manager};

/// A service as the API shows it: its definition and its live status.
#[derive(Debug, Clone, Serialize)]
pub struct ServiceView {
    pub user: String,
    #[serde(flatten)]
    pub spec: ServiceSpec,
    /// The working directory actually used.
    pub cwd_in_home: String,
    #[serde(flatten)]
    pub status: ServiceStatus,
}

fn view(svc: &Service) -> ServiceView {
    let spec = svc.spec();
    ServiceView {
        user: svc.user.to_string(),
        cwd_in_home: spec.cwd_in_home(),
        spec,
        status: svc.status(),
    }
}

/// A service in a tenant's stats: its name, state and restarts.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ServiceBrief {
    pub name: String,
    pub state: super::ServiceState,
    pub restarts: u64,
}

/// What `logs?follow=1` streams: the tail, then the output as it comes.
pub type LogStream = tokio::sync::mpsc::Receiver<Result<Bytes, std::io::Error>>;

impl Manager {
    /// Loads every stored service (not started: [`Manager::start_services`]).
    pub(super) fn load_services(&self) -> Result<(), ManageError> {
        let rows = self.state().all_services()?;
        for row in rows {
            let spec: ServiceSpec = match serde_json::from_str(&row.definition) {
                Ok(s) => s,
                Err(e) => {
                    tracing::error!(
                        tenant = row.tenant,
                        service = row.name,
                        "stored service unreadable, skipped: {e}"
                    );
                    continue;
                }
            };
            match UserId::parse(&row.tenant) {
                Ok(user) => {
                    self.services.insert(user, spec);
                }
                Err(e) => tracing::error!(
                    tenant = row.tenant,
                    "stored service of an invalid user id, skipped: {e}"
                ),
            }
        }
        Ok(())
    }

    /// Starts the enabled services of every tenant (`warren serve` at its
    /// start), and each again when its sandbox starts.
    pub async fn start_services(&self) {
        self.services.start_enabled().await;
    }

    fn service(&self, id: &str, name: &str) -> Result<Arc<Service>, ManageError> {
        self.record(id)?;
        validate_name(name)?;
        self.services
            .get(id, name)
            .ok_or_else(|| ManageError::NotFound(format!("{id} has no service {name:?}")))
    }

    fn save_service(&self, id: &str, spec: &ServiceSpec) -> Result<(), ManageError> {
        let json = serde_json::to_string(spec).map_err(|e| ManageError::Decode {
            what: "service".into(),
            source: e,
        })?;
        self.state().update_service(id, &spec.name, &json)?;
        Ok(())
    }

    /// Creates a service and, when enabled, starts it.
    pub async fn create_service(
        &self,
        actor: &str,
        id: &str,
        spec: ServiceSpec,
    ) -> Result<ServiceView, ManageError> {
        self.record(id)?;
        spec.validate()?;
        self.services.registry()?;
        let user = UserId::parse(id).map_err(|e| ManageError::BadRequest(e.to_string()))?;
        if self.services.of(id).len() >= MAX_SERVICES_PER_USER {
            return Err(ManageError::Conflict(format!(
                "{id} has {MAX_SERVICES_PER_USER} services, the most one user may have"
            )));
        }
        let row = ServiceRow {
            tenant: id.to_string(),
            name: spec.name.clone(),
            definition: serde_json::to_string(&spec).map_err(|e| ManageError::Decode {
                what: "service".into(),
                source: e,
            })?,
            created_at: self.now(),
        };
        let exists =
            || ManageError::Conflict(format!("{id} already has a service {:?}", spec.name));
        if self.services.get(id, &spec.name).is_some() || !self.state().insert_service(&row)? {
            return Err(exists());
        }
        let Some(svc) = self.services.insert(user, spec.clone()) else {
            return Err(exists());
        };
        self.audit(
            actor,
            "service.create",
            Some(id),
            "ok",
            serde_json::json!({"name": spec.name, "argv": spec.argv, "cwd": spec.cwd_in_home(),
                "port": spec.port, "restart": spec.restart, "enabled": spec.enabled}),
        );
        if spec.enabled {
            self.services.start(&svc).await?;
        }
        Ok(view(&svc))
    }

    pub fn list_services(&self, id: &str) -> Result<Vec<ServiceView>, ManageError> {
        self.record(id)?;
        Ok(self.services.of(id).iter().map(|s| view(s)).collect())
    }

    pub fn show_service(&self, id: &str, name: &str) -> Result<ServiceView, ManageError> {
        Ok(view(self.service(id, name)?.as_ref()))
    }

    /// The last `bytes` bytes of the service's output (all that is kept
    /// when `None`).
    pub fn service_logs(
        &self,
        id: &str,
        name: &str,
        bytes: Option<usize>,
    ) -> Result<Vec<u8>, ManageError> {
        Ok(self.service(id, name)?.log.tail(bytes))
    }

    /// The tail, then the output as it comes, until the service is deleted
    /// or the reader goes.
    pub fn follow_service_logs(
        &self,
        id: &str,
        name: &str,
        bytes: Option<usize>,
    ) -> Result<LogStream, ManageError> {
        let svc = self.service(id, name)?;
        let (tail, mut live) = svc.log.tail_and_follow(bytes);
        // Held weakly: a deleted service ends its followers.
        let weak = Arc::downgrade(&svc);
        drop(svc);
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        tokio::spawn(async move {
            if !tail.is_empty() && tx.send(Ok(Bytes::from(tail))).await.is_err() {
                return;
            }
            loop {
                let chunk = tokio::select! {
                    r = live.recv() => r,
                    _ = tokio::time::sleep(std::time::Duration::from_secs(1)) => {
                        if weak.strong_count() == 0 { return }
                        continue;
                    }
                    _ = tx.closed() => return,
                };
                let chunk = match chunk {
                    Ok(c) => c,
                    Err(broadcast::error::RecvError::Lagged(n)) => Bytes::from(format!(
                        "\n[warren] {n} chunks of output skipped (reader too slow)\n"
                    )),
                    Err(broadcast::error::RecvError::Closed) => return,
                };
                if tx.send(Ok(chunk)).await.is_err() {
                    return;
                }
            }
        });
        Ok(rx)
    }

    /// Starts a stopped service and marks it enabled.
    pub async fn start_service(
        &self,
        actor: &str,
        id: &str,
        name: &str,
    ) -> Result<ServiceView, ManageError> {
        let svc = self.service(id, name)?;
        self.services.registry()?;
        let spec = svc.set_enabled(true);
        self.save_service(id, &spec)?;
        self.services.start(&svc).await?;
        self.audit(
            actor,
            "service.start",
            Some(id),
            "ok",
            serde_json::json!({"name": name}),
        );
        Ok(view(&svc))
    }

    /// Stops a service (killing its command) and marks it disabled, so it
    /// stays stopped across restarts of the server and the sandbox.
    pub async fn stop_service(
        &self,
        actor: &str,
        id: &str,
        name: &str,
    ) -> Result<ServiceView, ManageError> {
        let svc = self.service(id, name)?;
        let spec = svc.set_enabled(false);
        self.save_service(id, &spec)?;
        svc.stop().await;
        self.audit(
            actor,
            "service.stop",
            Some(id),
            "ok",
            serde_json::json!({"name": name}),
        );
        Ok(view(&svc))
    }

    /// Stops the service if it runs and starts it again (enabled).
    pub async fn restart_service(
        &self,
        actor: &str,
        id: &str,
        name: &str,
    ) -> Result<ServiceView, ManageError> {
        let svc = self.service(id, name)?;
        self.services.registry()?;
        let spec = svc.set_enabled(true);
        self.save_service(id, &spec)?;
        svc.stop().await;
        self.services.start(&svc).await?;
        self.audit(
            actor,
            "service.restart",
            Some(id),
            "ok",
            serde_json::json!({"name": name}),
        );
        Ok(view(&svc))
    }

    /// Stops a service and removes it.
    pub async fn delete_service(
        &self,
        actor: &str,
        id: &str,
        name: &str,
    ) -> Result<(), ManageError> {
        self.service(id, name)?;
        self.services.remove(id, name).await;
        self.state().delete_service(id, name)?;
        self.audit(
            actor,
            "service.delete",
            Some(id),
            "ok",
            serde_json::json!({"name": name}),
        );
        Ok(())
    }

    /// Stops and forgets a tenant's services (before its deletion); the
    /// database rows go with the tenant.
    pub(super) async fn remove_services_of(&self, id: &str) -> usize {
        self.services.remove_all_of(id).await
    }

    /// A tenant's services in brief (its stats).
    pub fn service_briefs(&self, id: &str) -> Vec<ServiceBrief> {
        self.services
            .of(id)
            .iter()
            .map(|s| {
                let status = s.status();
                ServiceBrief {
                    name: s.spec().name,
                    state: status.state,
                    restarts: status.restarts,
                }
            })
            .collect()
    }

    /// Stops every service (the server is shutting down); they stay
    /// enabled, so the next server starts them again.
    pub async fn stop_services(&self) {
        let all = self.services.all();
        futures_util::future::join_all(all.iter().map(|s| s.stop())).await;
    }

    /// Every tenant's services (the server's `/metrics`).
    pub fn all_services(&self) -> Vec<ServiceView> {
        self.services.all().iter().map(|s| view(s)).collect()
    }
}
