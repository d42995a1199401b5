//! A page of messages or replies too large to render whole, sent while it
//! is rendered.
//!
//! The owning shard answers such a page with a plan: where its messages
//! are. [`PageStream`] then asks the owner for one piece at a time
//! (`Command::PagePiece`, [`crate::engine::PIECE_BYTES_MAX`] of messages)
//! and hands out the body in the contract's exact shape,
//! `{"thread":"<key>","messages":[…],"pagination":P}` (replies without
//! `thread`): the pagination
//! comes after the array, so its `count` and anchors are those of the
//! messages actually sent. The caller asks for the next piece only once it
//! has written the last, so a slow reader slows the rendering instead of
//! making anyone buffer the page, and no store iterator stays open between
//! pieces.

use super::render::{list_head, list_tail, push_rows};
use crate::engine::{Command, EngineError, PageKeys, Pagination, Piece, PlannedPage, Reply};
use crate::mesh::Mesh;
use crate::shard::ShardId;

/// Where a streamed page's body is.
enum Stage {
    /// Nothing handed out yet.
    Head,
    /// These messages are still to render.
    Rest(PageKeys),
    /// Every message is out; the pagination is next.
    Tail,
    Done,
}

/// A planned page being rendered piece by piece. Memory: the piece being
/// handed out, never the page.
pub struct PageStream {
    owner: ShardId,
    page: PlannedPage,
    stage: Stage,
    count: usize,
    first_key: Option<String>,
    last_key: Option<String>,
}

impl PageStream {
    pub fn new(owner: ShardId, page: PlannedPage) -> PageStream {
        PageStream {
            owner,
            page,
            stage: Stage::Head,
            count: 0,
            first_key: None,
            last_key: None,
        }
    }

    /// The next bytes of the body, never empty; `None` once all is out.
    /// An error leaves the body unfinished: whoever sends it must not
    /// finish it either, so the client sees it cut short.
    pub async fn next(&mut self, mesh: &Mesh) -> Result<Option<Vec<u8>>, EngineError> {
        loop {
            match self.stage {
                Stage::Head => {
                    let thread = [("thread", self.page.thread.as_str())];
                    let fields = if self.page.names_thread {
                        &thread[..]
                    } else {
                        &[]
                    };
                    let mut out = list_head(fields, "messages");
                    self.stage = Stage::Rest(self.page.plan.keys.clone());
                    self.pieces_into(&mut out, mesh).await?;
                    return Ok(Some(out));
                }
                Stage::Rest(_) => {
                    let mut out = Vec::new();
                    self.pieces_into(&mut out, mesh).await?;
                    if !out.is_empty() {
                        return Ok(Some(out));
                    }
                }
                Stage::Tail => {
                    let pagination = Pagination::of(
                        self.first_key.take(),
                        self.last_key.take(),
                        self.count,
                        (self.page.plan.has_before, self.page.plan.has_after),
                        self.page.plan.total,
                    );
                    let mut out = Vec::with_capacity(256);
                    list_tail(&mut out, &pagination);
                    self.stage = Stage::Done;
                    return Ok(Some(out));
                }
                Stage::Done => return Ok(None),
            }
        }
    }

    /// The whole body, for callers that need it in one piece (SQL).
    pub async fn collect(mut self, mesh: &Mesh) -> Result<Vec<u8>, EngineError> {
        let mut body = Vec::new();
        while let Some(bytes) = self.next(mesh).await? {
            body.extend_from_slice(&bytes);
        }
        Ok(body)
    }

    /// Appends the next piece that lists a message, or moves on to the
    /// tail when no more are left (messages deleted since the plan leave
    /// pieces empty).
    async fn pieces_into(&mut self, out: &mut Vec<u8>, mesh: &Mesh) -> Result<(), EngineError> {
        while let Stage::Rest(keys) = std::mem::replace(&mut self.stage, Stage::Tail) {
            let piece = self.fetch(keys, mesh).await?;
            if let Some(rest) = piece.rest {
                self.stage = Stage::Rest(rest);
            }
            if piece.rows.is_empty() {
                continue;
            }
            push_rows(out, &piece.rows, self.count > 0);
            self.count += piece.rows.len();
            if self.first_key.is_none() {
                self.first_key = piece.first_key;
            }
            self.last_key = piece.last_key;
            return Ok(());
        }
        Ok(())
    }

    async fn fetch(&self, keys: PageKeys, mesh: &Mesh) -> Result<Piece, EngineError> {
        let command = Command::PagePiece {
            thread: self.page.thread.clone(),
            caller: self.page.caller.clone(),
            keys,
            include_deleted: self.page.include_deleted,
        };
        match mesh.call(self.owner, command).await? {
            Reply::Piece(piece) => Ok(*piece),
            _ => Err(EngineError::Storage(
                "unexpected reply to a page piece".into(),
            )),
        }
    }
}
