//! The shared parts of the operations' `#[utoipa::path]` attributes: the
//! error responses every operation refers to, the path parameters and the
//! bodies that are not wire types. Below both the handlers (`super::api`)
//! and the document (`super::api_doc`).

use serde::Deserialize;
use utoipa::openapi::response::{Response, ResponseBuilder};
use utoipa::openapi::schema::{ObjectBuilder, Type};
use utoipa::openapi::{ContentBuilder, Ref, RefOr, Schema};
use utoipa::{IntoParams, PartialSchema, ToResponse, ToSchema};

use super::api_wire::UserIdString;

/// An error response: `{"error": "..."}` and when it is given.
fn error_response(description: &str) -> RefOr<Response> {
    ResponseBuilder::new()
        .description(description)
        .content(
            "application/json",
            ContentBuilder::new()
                .schema(Some(Ref::from_schema_name("Error")))
                .build(),
        )
        .build()
        .into()
}

/// The error responses, as components the operations refer to.
macro_rules! error_responses {
    ($($name:ident: $description:literal;)*) => {$(
        #[doc = $description]
        pub struct $name;
        impl<'r> ToResponse<'r> for $name {
            fn response() -> (&'r str, RefOr<Response>) {
                (stringify!($name), error_response($description))
            }
        }
    )*};
}

error_responses! {
    BadRequest: "The request is malformed: an invalid user id; a body that is not JSON or not of the expected shape (a missing or unknown field, a value of the wrong type); an invalid value (limits, argv, cwd, timeout, environment); a refused archive";
    Unauthorized: "No admin token, or a wrong one";
    Forbidden: "A user's login token: the management API needs the admin token";
    NotFound: "No such user (or no such terminal)";
    Conflict: "The request conflicts with the state: a user id whose slug belongs to another tenant, or a home that is not a directory";
    PayloadTooLarge: "The body is too large: a JSON body over 4 MiB, an upload over 1 GiB, or an archive whose content is over the import limits";
    UnsupportedMediaType: "The body is not sent as `Content-Type: application/json`";
    InternalError: "Something failed on the server; the server's log has the details (the body does not)";
    Unavailable: "The management API is not enabled on this server, the server is at capacity (sandboxes or terminals), or it is shutting down";
}

/// The tenant in a path.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct UserPath {
    /// A tenant id, percent-encoded (ids may hold `@`, inner spaces and non-ASCII letters; see `UserIdString` and docs/tenants.md). An invalid id gets 400.
    pub user: UserIdString,
}

/// A tenant's terminal in a path.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct TerminalPath {
    /// A tenant id, percent-encoded (ids may hold `@`, inner spaces and non-ASCII letters; see `UserIdString` and docs/tenants.md). An invalid id gets 400.
    pub user: UserIdString,
    /// A terminal id from `GET /api/users/{user}/terminals`
    #[param(min_length = 1, max_length = 64)]
    pub terminal: String,
}

/// A path in a tenant's home.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct FilePath {
    /// A tenant id, percent-encoded (ids may hold `@`, inner spaces and non-ASCII letters; see `UserIdString` and docs/tenants.md). An invalid id gets 400.
    pub user: UserIdString,
    /// Relative to the home, `/`-separated (each name percent-encoded); no `..`, no leading `/`, no NUL, not through a symlink
    #[param(min_length = 1, max_length = 4096)]
    pub path: String,
}

/// A path in the logged-in user's home.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct MyFilePath {
    /// Relative to the home, `/`-separated (each name percent-encoded); no `..`, no leading `/`, no NUL, not through a symlink
    #[param(min_length = 1, max_length = 4096)]
    pub path: String,
}

/// Bodies that are not JSON (or not a wire type), described by their
/// schema alone.
macro_rules! body_schema {
    ($($name:ident: $schema:expr;)*) => {$(
        pub struct $name;
        impl PartialSchema for $name {
            fn schema() -> RefOr<Schema> {
                $schema.into()
            }
        }
        impl ToSchema for $name {}
    )*};
}

body_schema! {
    HealthzBody: ObjectBuilder::new().schema_type(Type::String).enum_values(Some(["ok\n"]));
    OpenApiBody: ObjectBuilder::new()
        .schema_type(Type::Object)
        .required("openapi")
        .required("info")
        .required("paths");
    FileBytes: ObjectBuilder::new()
        .schema_type(Type::String)
        .content_media_type("application/octet-stream");
    TarGz: ObjectBuilder::new()
        .schema_type(Type::String)
        .content_media_type("application/gzip");
}
