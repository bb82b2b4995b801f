//! Who calls: AIBrain's account routes (register, login, refresh, logout, me), API keys,
//! invites, and the GitHub sign-in exchange. The credentials themselves are checked by
//! `crate::auth`; these are the routes that issue and revoke them.

pub mod api_keys;
pub mod github;
pub mod invites;
pub mod sessions;

use utoipa_axum::router::OpenApiRouter;

use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .merge(sessions::router())
        .merge(api_keys::router())
        .merge(invites::router())
        .merge(github::router())
}
