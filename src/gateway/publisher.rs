//! The publish stream: a websocket on the gateway port (`GET /publish` with
//! `Authorization: Bearer <admin token>`) over which a backend publishes
//! events at stream speed — what `POST /v1/publish` does, without an HTTP
//! request and a reply per event. Each text frame is the same JSON body:
//! `{"channel":"C…","event":{…,"type":…},"transient":true,"id":7}`.
//!
//! A frame without `id` is fire-and-forget: it goes to the channel's owner
//! and nothing is answered, not even a refusal (like NATS `PUB`). A frame
//! with `id` is answered `{"ok":true,"reply_to":7,"ts":…}` or an error
//! (`channel_not_found`), and the stream waits for that answer before the
//! next frame. Malformed frames are always answered with the RTM error
//! object. Per channel, events keep the order of the stream.
//!
//! A publisher holds no subscriptions and no presence; it is not counted
//! among the shard's connections. Reading pauses while the shard's mesh is
//! congested, so a fast backend slows to the fan-out's pace instead of
//! filling queues.

use std::rc::Rc;
use std::time::Duration;

use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::net::TcpStream;
use serde_json::Value;

use super::codes::{self, ClientError};
use super::frame::{self, ClientFrame, FrameReader};
use super::handshake;
use super::publish_frame;
use crate::ids::Id;
use crate::shard::message::{EventBody, Msg, Persist, Refusal};
use crate::shard::Shard;

/// Bytes read per call: a publisher is one per backend, not per user.
const READ_BYTES: usize = 64 * 1024;

/// Serves one publish stream until the backend closes it.
pub async fn serve(
    shard: &Rc<Shard>,
    mut stream: TcpStream,
    key: &str,
    token: &str,
    leftover: Vec<u8>,
) {
    if !crate::admin::token_matches(token, &shard.node.admin_token) {
        let why = "publish needs the admin token";
        super::connection::refuse(stream, key, codes::CLOSE_AUTH_FAILED, why).await;
        return;
    }
    let mut hello = handshake::accept_response(key);
    hello.extend_from_slice(&frame::encode_text(br#"{"type":"hello"}"#));
    if stream.write_all(&hello).await.is_err() {
        return;
    }
    let mut reader = FrameReader::new();
    let mut frames = Vec::new();
    let mut buf = vec![0u8; READ_BYTES];
    let mut leftover = Some(leftover);
    let mut n = 0;
    loop {
        let fed = match leftover.take() {
            Some(bytes) => reader.feed(&bytes, &mut frames),
            None => reader.feed(&buf[..n], &mut frames),
        };
        if let Err(e) = fed {
            let _ = stream
                .write_all(&frame::encode_close(e.close_code(), &e.to_string()))
                .await;
            return;
        }
        for f in frames.drain(..) {
            let answer = match f {
                ClientFrame::Text(payload) => publish(shard, &payload).await,
                ClientFrame::Ping(p) => Some(frame::encode_pong(&p).to_vec()),
                ClientFrame::Pong => None,
                ClientFrame::Close(_) => {
                    let _ = stream
                        .write_all(&frame::encode_close(codes::CLOSE_NORMAL, ""))
                        .await;
                    let _ = stream.close().await;
                    return;
                }
            };
            if let Some(bytes) = answer {
                if stream.write_all(&bytes).await.is_err() {
                    return;
                }
            }
        }
        // Backpressure: the channel servers take what we send at their pace.
        while shard.mesh.congested() {
            glommio::timer::sleep(Duration::from_millis(1)).await;
        }
        n = match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(read) => read,
        };
    }
}

/// One publish frame; returns the frame to answer with, if any.
async fn publish(shard: &Rc<Shard>, payload: &[u8]) -> Option<Vec<u8>> {
    let error = |e: ClientError, id: Option<u64>| Some(frame::encode_text(&e.payload(id)).to_vec());
    let (channel, id, body, persist) = match read_publish(payload) {
        Ok(read) => read,
        Err((e, id)) => return error(e, id),
    };
    let Some(id) = id else {
        shard.send_owner(
            channel,
            Msg::Publish {
                reply: None,
                channel,
                body,
                persist,
                sender: None,
                exclude: None,
            },
        );
        return None;
    };
    let answer = shard
        .call_owner(channel, |reply| Msg::Publish {
            reply: Some(reply),
            channel,
            body,
            persist,
            sender: None,
            exclude: None,
        })
        .await;
    match answer {
        Ok(Ok(ts)) => {
            let mut v = serde_json::json!({"ok": true, "reply_to": id});
            if let Some(ts) = ts {
                v["ts"] = ts.to_string().into();
            }
            Some(frame::encode_text(&serde_json::to_vec(&v).expect("json")).to_vec())
        }
        Ok(Err(Refusal::ChannelNotFound)) => error(codes::ERR_CHANNEL_NOT_FOUND, Some(id)),
        _ => error(codes::ERR_BUSY, Some(id)),
    }
}

/// What a publish frame asks for: its channel, its `id`, and the event as
/// the channel server takes it; or the error to answer (with the `id`, if
/// it was read).
pub type Publish = (Id, Option<u64>, EventBody, Persist);

/// Reads one publish frame: the fast path of [`publish_frame`] when it
/// takes the frame, else a `serde_json::Value`, which decides the errors.
pub fn read_publish(payload: &[u8]) -> Result<Publish, (ClientError, Option<u64>)> {
    if let Some(p) = publish_frame::parse(payload) {
        let channel = Id::parse(&p.channel).ok_or((codes::ERR_CHANNEL_NOT_FOUND, p.id))?;
        return Ok((channel, p.id, p.body, p.persist));
    }
    let Ok(Value::Object(mut obj)) = serde_json::from_slice::<Value>(payload) else {
        return Err((codes::ERR_INVALID_JSON, None));
    };
    let id = obj.get("id").and_then(Value::as_u64);
    let Some(channel) = obj
        .get("channel")
        .and_then(Value::as_str)
        .map(str::to_string)
    else {
        return Err((codes::ERR_MISSING_FIELD, id));
    };
    let Some(channel) = Id::parse(&channel) else {
        return Err((codes::ERR_CHANNEL_NOT_FOUND, id));
    };
    let transient = obj
        .get("transient")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let Some(Value::Object(event)) = obj.remove("event") else {
        return Err((codes::ERR_MISSING_FIELD, id));
    };
    let Ok((body, persist)) = crate::ops::backend_event(event, transient) else {
        return Err((codes::ERR_MISSING_FIELD, id));
    };
    Ok((channel, id, body, persist))
}
