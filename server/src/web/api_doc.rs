//! The OpenAPI 3.1 document of the management API, generated from the
//! handlers' `#[utoipa::path]` attributes ([`super::api`]) and the wire
//! types ([`super::api_wire`]). It is served at `GET /api/openapi.json` and
//! committed as docs/openapi.json (for schemathesis and readers); a test
//! below fails when the two differ, and `UPDATE_OPENAPI=1 cargo test -p
//! warren --lib api_doc` rewrites the file.

use std::sync::LazyLock;

use utoipa::openapi::security::{
    ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme,
};
use utoipa::{Modify, OpenApi};

use super::api_wire::{
    self, AuditLog, CreateUser, Deleted, ErrorBody, ExecChunk, ExecEnd, ExecRequest, ExecResult,
    Imported, LimitOverridesUpdate, ShellUpdate, Stats, TerminalList, Uploaded, UserIdString,
    UserList, UserView,
};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "warren",
        description = "The management API of `warren serve`: tenants, their limits and usage, commands run in their sandboxes, home export and import, terminals, the audit log and Prometheus metrics. docs/api.md is the guide; server/tests/openapi.rs checks this document against the server. Every route except `GET /api/openapi.json` and `GET /healthz` needs the admin token as `Authorization: Bearer <token>` (never in the URL); a user's login token gets 403, no or another token 401, and a server started without the management API answers 503. Every error is a JSON object `{\"error\": \"...\"}`.",
        license(name = "MIT OR Apache-2.0", identifier = "MIT OR Apache-2.0"),
    ),
    servers((url = "/", description = "The `warren serve` listener")),
    security(("bearerAuth" = [])),
    tags(
        (name = "users", description = "Tenants and their limits"),
        (name = "commands", description = "Commands run in a tenant's sandbox"),
        (name = "homes", description = "A tenant's home as a tar.gz"),
        (name = "files", description = "Files and folders of a home, by path"),
        (name = "terminals", description = "A tenant's open web terminals"),
        (name = "services", description = "A tenant's named services: long-running commands in its sandbox"),
        (name = "server", description = "Audit log, metrics, health and this document"),
        (name = "previews", description = "Share links for the preview URLs of a tenant's ports (docs/previews.md)"),
    ),
    paths(
        super::api::openapi,
        super::api::healthz,
        super::api::metrics_text,
        super::api::list_users,
        super::api::create_user,
        super::api::show_user,
        super::api::delete_user,
        super::api::set_limits,
        super::api::set_shell,
        super::api::stats,
        super::api::exec,
        super::api::exec_stream,
        super::api::export,
        super::api::import,
        super::api::get_file,
        super::api::put_file,
        super::api::get_my_file,
        super::api::put_my_file,
        super::api::terminals,
        super::api::close_terminal,
        super::api::audit,
        super::api_services::list,
        super::api_services::create,
        super::api_services::show,
        super::api_services::logs,
        super::api_services::start,
        super::api_services::stop,
        super::api_services::restart,
        super::api_services::delete,
        super::api_services::my_list,
        super::api_services::my_create,
        super::api_services::my_show,
        super::api_services::my_logs,
        super::api_services::my_start,
        super::api_services::my_stop,
        super::api_services::my_restart,
        super::api_services::my_delete,
        super::node::show_node,
        super::node::set_node,
        super::api_previews::create_share,
        super::api_previews::list_shares,
        super::api_previews::revoke_share,
        super::api_previews::create_my_share,
        super::api_previews::list_my_shares,
        super::api_previews::revoke_my_share,
        super::api_previews::my_ports,
    ),
    components(
        schemas(
            ErrorBody, UserIdString, CreateUser, LimitOverridesUpdate, UserView, UserList, Stats,
            ExecRequest, ExecResult, ExecChunk, ExecEnd, Deleted, Imported, Uploaded, ShellUpdate, TerminalList,
            AuditLog, super::node::NodeView, super::node::NodeStateUpdate, super::node::GaugeView,
            super::node::NodeStateWire,
            super::services_wire::ServiceCreate, super::services_wire::Service,
            super::services_wire::ServiceList, super::services_wire::RestartPolicy,
            super::api_wire::ServiceState, super::services_wire::ServiceExit,
            super::api_wire::ServiceBrief,
            super::api_previews::ShareCreate, super::api_previews::ShareView,
            super::api_previews::ShareList, super::api_previews::OpenPorts,
            super::api_previews::OpenPort,
        ),
        responses(
            BadRequest, Unauthorized, Forbidden, NotFound, Conflict, PayloadTooLarge,
            UnsupportedMediaType, InternalError, Unavailable,
        ),
    ),
    modifiers(&Security),
)]
pub struct ApiDoc;

/// The admin token's scheme (the derive has no attribute for it), and no
/// security at all (`[]`) for the public operations, which the derive
/// writes as an optional one (`security(())`: `[{}]`).
struct Security;

impl Modify for Security {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let optional = [SecurityRequirement::default()];
        for item in doc.paths.paths.values_mut() {
            let ops = [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
                &mut item.patch,
            ];
            for op in ops.into_iter().flatten() {
                if op.security.as_deref() == Some(&optional[..]) {
                    op.security = Some(Vec::new());
                }
            }
        }
        doc.components.get_or_insert_with(Default::default).add_security_scheme(
            "bearerAuth",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "The admin token (`warren serve --admin-token-file`, default `<state dir>/admin-token`). A user's login token or session cookie is refused with 403.",
                    ))
                    .build(),
            ),
        );
        doc.components.get_or_insert_with(Default::default).add_security_scheme(
            "userSession",
            SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::with_description(
                "warren_session",
                "A user's own login: the session cookie the login URL sets (in JWT mode, `Authorization: Bearer <jwt>` works too). Only the `/api/me/...` routes take it.",
            ))),
        );
    }
}

/// The document as served and committed: pretty JSON and a newline.
pub fn document() -> &'static str {
    static DOCUMENT: LazyLock<String> = LazyLock::new(|| {
        let mut text = ApiDoc::openapi()
            .to_pretty_json()
            .expect("the OpenAPI document serializes");
        text.push('\n');
        text
    });
    &DOCUMENT
}

pub use super::api_responses::*;

pub use api_wire::ExecLine;

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn doc() -> Value {
        serde_json::from_str(document()).unwrap()
    }

    /// docs/openapi.json is what the code generates; `UPDATE_OPENAPI=1`
    /// rewrites it.
    #[test]
    fn committed_document_is_the_generated_one() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/openapi.json");
        if std::env::var_os("UPDATE_OPENAPI").is_some_and(|v| v == "1") {
            std::fs::write(path, document()).unwrap();
        }
        let committed = std::fs::read_to_string(path).unwrap();
        assert!(
            committed == document(),
            "docs/openapi.json is not the generated document: run \
             `UPDATE_OPENAPI=1 cargo test -p warren --lib api_doc` and commit it"
        );
    }

    /// The bounds written as literals in attributes are the ones the
    /// server enforces.
    #[test]
    fn bounds_in_the_document_are_the_servers() {
        let d = doc();
        let exec = &d["components"]["schemas"]["ExecRequest"]["properties"];
        assert_eq!(
            exec["cwd"]["maxLength"],
            warren_domain::manage::MAX_CWD_CHARS as u64
        );
        assert_eq!(
            exec["timeout_secs"]["minimum"],
            warren_domain::manage::MIN_TIMEOUT_SECS
        );
        assert_eq!(
            exec["timeout_secs"]["maximum"].as_f64(),
            Some(warren_domain::exec::MAX_TIMEOUT.as_secs_f64())
        );
        let audit = d["paths"]["/api/audit"]["get"]["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == "limit")
            .unwrap()
            .clone();
        assert_eq!(
            audit["schema"]["maximum"],
            super::super::api::AUDIT_PAGE_MAX
        );
        assert_eq!(
            audit["schema"]["default"],
            super::super::api::AUDIT_PAGE_DEFAULT
        );
    }

    /// Every object schema is exact: it says whether other fields may
    /// come (the conformance test relies on it).
    #[test]
    fn every_object_states_additional_properties() {
        let d = doc();
        for (name, s) in d["components"]["schemas"].as_object().unwrap() {
            if s.get("properties").is_some() {
                assert_eq!(
                    s["additionalProperties"],
                    Value::Bool(false),
                    "{name} allows unknown fields"
                );
            }
        }
    }
}
