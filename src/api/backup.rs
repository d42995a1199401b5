//! `POST /admin/v1/backups` and `GET /admin/v1/backups/{id}`: online
//! backups (see [`crate::backup`]).

use serde::Deserialize;

use super::input::decode_body;
use super::router::Route;
use super::{Api, ApiError, Handled, json};
use crate::backup::{Target, job};
use crate::engine::Command;
use crate::http::Request;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StartBackup {
    target: String,
}

impl Api {
    /// Answers a backup route, or `None` when `route` is not one.
    pub(super) async fn backup_route(
        &self,
        route: &Route,
        request: &Request,
    ) -> Option<Result<Handled, ApiError>> {
        match route {
            Route::StartBackup => Some(self.start_backup(request).await),
            Route::GetBackup(id) => Some(get_backup(id)),
            _ => None,
        }
    }

    /// Takes every shard's snapshot now, then writes them on the backup's
    /// thread; answers 202 as soon as the snapshots are taken.
    async fn start_backup(&self, request: &Request) -> Result<Handled, ApiError> {
        let body: StartBackup = decode_body(request)?;
        let target = Target::parse(&body.target)
            .map_err(|why| ApiError::bad_request("invalid_target", why))?;
        let shards = self.mesh.shard_count();
        let job = job::begin(target, shards).map_err(|running| {
            ApiError::new(
                409,
                "backup_running",
                format!("backup {running} is still running; one backup runs at a time"),
            )
        })?;
        let (to, snapshots) = std::sync::mpsc::channel();
        let taken = self
            .ask_every_shard(|| Command::Snapshot { to: to.clone() })
            .await;
        drop(to);
        let started = taken.map_err(|err| err.message.clone()).and_then(|_| {
            job.clone()
                .run(self.db.clone(), snapshots)
                .map_err(|err| format!("cannot start the backup thread: {err}"))
        });
        if let Err(why) = started {
            job.fail(why.clone());
            return Err(ApiError::new(503, "backup_failed", why));
        }
        Ok(Handled::Response(json(
            202,
            job.status().to_string().into_bytes(),
        )))
    }
}

fn get_backup(id: &str) -> Result<Handled, ApiError> {
    let job = job::find(id)
        .ok_or_else(|| ApiError::new(404, "backup_not_found", "no backup has this id"))?;
    Ok(Handled::Response(json(
        200,
        job.status().to_string().into_bytes(),
    )))
}
