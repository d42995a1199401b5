//! The authenticated routes outside `/admin/v1/threads`: one function per
//! route turning a request into a [`Command`] for the owning shard, and
//! [`Api::answer`], which sends it and renders the typed reply as the
//! ProgressDB v0.2 contract asks (`render`: created objects 201, single
//! reads wrapped as `{"thread":…}` / `{"message":…}`, every mutation
//! answering its object).

use super::input::{self, decode_body};
use super::page_stream::PageStream;
use super::router::Route;
use super::{Api, ApiError, Call, Handled, LiveTail, json, render, status_ok, thread_id};
use crate::auth::KeyKind;
use crate::config::Limits;
use crate::engine::{Caller, Command, EngineError, Reply};
use crate::model::UserId;
use crate::shard::shard_for;

impl Call<'_> {
    /// The user a frontend route acts for. A frontend key acts for its
    /// signed user. A backend key names one, as the ProgressDB SDKs do:
    /// the body's `author`, else `X-User-ID`, else `?author=`.
    pub(super) fn user(&self, body_author: Option<&str>) -> Result<UserId, ApiError> {
        if self.principal.kind != KeyKind::Backend {
            return Ok(self.principal.require_user()?);
        }
        let named = body_author.or(self.principal.user.as_ref().map(UserId::as_str));
        match named.or(self.query.author.as_deref()) {
            Some(author) => UserId::parse(author.trim()).ok_or_else(|| {
                ApiError::bad_request(
                    "invalid_field",
                    "`author` must be 1 to 128 printable ASCII characters without spaces",
                )
            }),
            None => Err(ApiError::bad_request(
                "missing_user_id",
                "this route acts for a user: send `author` in the body, `X-User-ID`, or `?author=`",
            )),
        }
    }

    fn caller(&self, body_author: Option<&str>) -> Result<Caller, ApiError> {
        Ok(Caller {
            user: Some(self.user(body_author)?),
        })
    }
}

impl Api {
    pub(super) async fn authenticated(
        &self,
        route: Route,
        call: &Call<'_>,
    ) -> Result<Handled, ApiError> {
        let response = match route {
            Route::ListThreads => self.list_threads(call).await?,
            Route::Stats => self.stats(call.request).await?,
            Route::AdminHealth => status_ok(),
            Route::AdminTotals => self.totals(call.request).await?,
            Route::Metrics => self.metrics().await?,
            Route::Sign => self.sign(call.request)?,
            Route::RotateMasterKey => self.rotate_master_key().await?,
            Route::StreamMessages(id) => {
                return Ok(Handled::Stream(LiveTail {
                    thread: Some(thread_id(&id)?),
                    caller: call.caller(None)?,
                    last_event_id: input::last_event_id(call.request, &call.query)?,
                    peers: Vec::new(),
                }));
            }
            Route::StreamUser => {
                return Ok(Handled::Stream(LiveTail {
                    thread: None,
                    caller: call.caller(None)?,
                    last_event_id: None,
                    peers: self.peer_streams(call.request),
                }));
            }
            Route::GetThread(id) => {
                let command = Command::GetThread {
                    id: thread_id(&id)?,
                    caller: call.caller(None)?,
                    include_deleted: call.query.include_deleted()?,
                };
                return self.answer(command, Some("thread")).await;
            }
            Route::GetMessage(id, mid) => {
                let command = Command::GetMessage {
                    thread: thread_id(&id)?,
                    caller: call.caller(None)?,
                    id: mid,
                    include_deleted: call.query.include_deleted()?,
                };
                return self.answer(command, Some("message")).await;
            }
            route => return self.answer(self.command(route, call)?, None).await,
        };
        Ok(Handled::Response(response))
    }

    /// The command of a route that the owning shard answers as it is.
    fn command(&self, route: Route, call: &Call<'_>) -> Result<Command, ApiError> {
        match route {
            Route::CreateThread => self.create_thread(call),
            Route::UpdateThread(id) => self.update_thread(call, &id),
            Route::DeleteThread(id) => Ok(Command::DeleteThread {
                id: thread_id(&id)?,
                caller: call.caller(None)?,
            }),
            Route::RestoreThread(id) => Ok(Command::RestoreThread {
                id: thread_id(&id)?,
                caller: call.caller(None)?,
            }),
            Route::PostMessage(id) => self.post_message(call, &id),
            Route::SeedPostMessage => self.seed_post_message(call),
            Route::ListParticipants(_)
            | Route::AddParticipant(_)
            | Route::RemoveParticipant(..)
            | Route::MarkRead(_) => participant_command(route, call, &self.limits),
            route => self.message_command(route, call),
        }
    }

    /// The command of a route on one message or a list of them.
    fn message_command(&self, route: Route, call: &Call<'_>) -> Result<Command, ApiError> {
        let query = &call.query;
        Ok(match route {
            Route::ListMessages(id) => Command::ListMessages {
                thread: thread_id(&id)?,
                caller: call.caller(None)?,
                page: query.message_page(&self.limits)?,
                in_pieces: true,
                rendering: Some(render::message_list),
            },
            Route::SeedListMessages(id) => Command::ListMessages {
                thread: thread_id(&id)?,
                caller: Caller { user: None },
                page: query.message_page(&self.limits)?,
                in_pieces: true,
                rendering: Some(render::message_list),
            },
            Route::ListVersions(id, mid) => Command::ListVersions {
                thread: thread_id(&id)?,
                caller: call.caller(None)?,
                id: mid,
                page: query.version_page(&self.limits)?,
            },
            Route::ListReplies(id, mid) => Command::ListReplies {
                thread: thread_id(&id)?,
                caller: call.caller(None)?,
                id: mid,
                page: query.reply_page(&self.limits)?,
                in_pieces: true,
            },
            Route::React(id, mid) => {
                let body: input::React = decode_body(call.request)?;
                Command::React {
                    thread: thread_id(&id)?,
                    caller: call.caller(body.author.as_deref())?,
                    id: mid,
                    reaction: Some(input::reaction(body.reaction)?),
                }
            }
            Route::Unreact(id, mid) => Command::React {
                thread: thread_id(&id)?,
                caller: call.caller(None)?,
                id: mid,
                reaction: None,
            },
            Route::RestoreMessage(id, mid) => Command::RestoreMessage {
                thread: thread_id(&id)?,
                caller: call.caller(None)?,
                id: mid,
            },
            Route::EditMessage(id, mid) => {
                let body: input::EditMessage = decode_body(call.request)?;
                Command::EditMessage {
                    thread: thread_id(&id)?,
                    caller: call.caller(body.author.as_deref())?,
                    id: mid,
                    body: input::required_body(body.body)?,
                }
            }
            Route::DeleteMessage(id, mid) => Command::DeleteMessage {
                thread: thread_id(&id)?,
                caller: call.caller(None)?,
                id: mid,
            },
            route => return Err(not_a_command(&route)),
        })
    }

    /// Sends `command` to its thread's owner and answers its object, 201
    /// when it created one; `wrap` names the member a single read is
    /// wrapped in.
    pub(super) async fn answer(
        &self,
        command: Command,
        wrap: Option<&str>,
    ) -> Result<Handled, ApiError> {
        let owner = shard_for(command.thread().as_str(), self.mesh.shard_count());
        let reply = match self.mesh.call(owner, command).await? {
            Reply::Page(page) => {
                let page = Box::new(PageStream::new(owner, *page));
                return Ok(Handled::Page(json(200, Vec::new()), page));
            }
            reply => reply,
        };
        let (status, body) = render::reply(reply, wrap)
            .ok_or_else(|| ApiError::from(EngineError::Storage("unexpected reply".into())))?;
        Ok(Handled::Response(json(status, body)))
    }

    /// `POST /frontend/v1/threads {"title","key"?}`: a backend may choose
    /// the key; otherwise one is generated.
    ///
    /// Chosen keys are a backend privilege. A browser that could pick one
    /// could squat a name the backend later posts into through the seed
    /// route (which appends to whatever thread holds that name), and could
    /// probe which names exist (409). Refused before the key is looked at,
    /// so the answer is the same whether the name is free, taken or
    /// deleted.
    fn create_thread(&self, call: &Call<'_>) -> Result<Command, ApiError> {
        let body: input::CreateThread = decode_body(call.request)?;
        if body.key.is_some() && call.principal.kind != KeyKind::Backend {
            return Err(ApiError::new(
                403,
                "thread_key_forbidden",
                "only backend keys may choose a thread's key; omit `key` (and `id`) to get a generated one",
            ));
        }
        Ok(Command::CreateThread {
            id: match body.key {
                Some(key) => thread_id(&key)?,
                None => self.generate_owned_thread_id(),
            },
            author: call.user(body.author.as_deref())?,
            title: input::title(body.title, &self.limits)?,
            slug: input::optional_slug(body.slug)?,
            participants: input::participants(body.participants)?,
        })
    }

    fn update_thread(&self, call: &Call<'_>, id: &str) -> Result<Command, ApiError> {
        let body: input::UpdateThread = decode_body(call.request)?;
        let title = body
            .title
            .map(|title| input::title(Some(title), &self.limits))
            .transpose()?;
        let slug = input::optional_slug(body.slug)?;
        if title.is_none() && slug.is_none() {
            return Err(ApiError::bad_request(
                "missing_field",
                "send `title` or `slug`",
            ));
        }
        Ok(Command::UpdateThread {
            id: thread_id(id)?,
            caller: call.caller(body.author.as_deref())?,
            title,
            slug,
        })
    }

    fn post_message(&self, call: &Call<'_>, id: &str) -> Result<Command, ApiError> {
        let body: input::PostMessage = decode_body(call.request)?;
        let author = call.user(body.author.as_deref())?;
        Ok(Command::PostMessage {
            thread: thread_id(id)?,
            caller: Caller {
                user: Some(author.clone()),
            },
            author,
            role: input::optional_role(body.role, &self.limits)?,
            body: input::required_body(body.body)?,
            reply_to: body.reply_to,
            create_thread_titled: None,
        })
    }

    /// `POST /v1/messages {"thread","author","body"}`: the quickstart
    /// route, which creates the thread (titled with its key) on first use.
    fn seed_post_message(&self, call: &Call<'_>) -> Result<Command, ApiError> {
        let body: input::SeedPostMessage = decode_body(call.request)?;
        let Some(thread) = body.thread else {
            return Err(ApiError::bad_request(
                "missing_field",
                "`thread` is required",
            ));
        };
        let thread = thread_id(&thread)?;
        Ok(Command::PostMessage {
            create_thread_titled: Some(thread.to_string()),
            thread,
            caller: Caller { user: None },
            author: call.user(body.author.as_deref())?,
            role: input::optional_role(body.role, &self.limits)?,
            body: input::required_body(body.body)?,
            reply_to: body.reply_to,
        })
    }
}

/// The command of a route on a thread's participants or read markers.
fn participant_command(
    route: Route,
    call: &Call<'_>,
    limits: &Limits,
) -> Result<Command, ApiError> {
    Ok(match route {
        Route::ListParticipants(id) => Command::ListParticipants {
            thread: thread_id(&id)?,
            caller: call.caller(None)?,
            page: call.query.participant_page(limits)?,
        },
        Route::AddParticipant(id) => {
            let body: input::AddParticipant = decode_body(call.request)?;
            let user = body
                .user_id
                .ok_or_else(|| ApiError::bad_request("missing_field", "`user_id` is required"))?;
            Command::AddParticipant {
                thread: thread_id(&id)?,
                caller: call.caller(body.author.as_deref())?,
                user: input::user_id(&user, "user_id")?,
                role: input::participant_role(body.role.as_deref())?,
            }
        }
        Route::RemoveParticipant(id, user) => Command::RemoveParticipant {
            thread: thread_id(&id)?,
            caller: call.caller(None)?,
            user: input::user_id(&user, "user_id")?,
        },
        Route::MarkRead(id) => {
            let body: input::MarkRead = decode_body(call.request)?;
            let message = body.message.ok_or_else(|| {
                ApiError::bad_request(
                    "missing_field",
                    "`message` (the key of the newest message read) is required",
                )
            })?;
            Command::MarkRead {
                thread: thread_id(&id)?,
                caller: call.caller(body.author.as_deref())?,
                id: message,
            }
        }
        route => return Err(not_a_command(&route)),
    })
}

/// A route reached a handler table that does not serve it: a bug in this
/// module, answered as an internal error, never a panic.
pub(super) fn not_a_command(route: &Route) -> ApiError {
    crate::logging::error("route has no command", &[("route", &format!("{route:?}"))]);
    ApiError::internal()
}
