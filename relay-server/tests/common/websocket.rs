//! A volunteer's WebSocket to the relay (the fallback when WebRTC cannot connect), as an
//! honest client and as an attacker uses it.

// Each test binary that includes `common` uses some of these.
#![allow(dead_code)]

use futures::{SinkExt, StreamExt};
use starling_protocol::{
    encode_frames, Binding, ChallengeBinding, DeviceInfo, Reassembler, ToRelay, ToVolunteer,
    WalletKey, PROTOCOL_VERSION,
};
use std::time::Duration;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// A client's WebSocket.
pub type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// `GET /api/v1/ws` on the relay at `url` (`http://host:port`): the socket and the
/// binding its hello signs (the relay's challenge, the first message, and the host).
pub async fn open(url: &str) -> anyhow::Result<(Socket, Binding)> {
    let host = url.trim_start_matches("http://");
    let (mut socket, _) =
        tokio_tungstenite::connect_async(format!("ws://{host}/api/v1/ws")).await?;
    let binding = match receive(&mut socket, 1 << 16).await? {
        ToVolunteer::Challenge { challenge } => {
            Binding::Challenge(ChallengeBinding::new(challenge, host))
        }
        other => anyhow::bail!("expected a challenge first, got {other:?}"),
    };
    Ok((socket, binding))
}

/// The next message on `socket`, reassembled up to `max_bytes`; an error if none comes
/// within 15 s or the socket closes.
pub async fn receive(socket: &mut Socket, max_bytes: usize) -> anyhow::Result<ToVolunteer> {
    let mut reassembler = Reassembler::new(max_bytes);
    loop {
        let message = tokio::time::timeout(Duration::from_secs(15), socket.next())
            .await?
            .ok_or_else(|| anyhow::anyhow!("the relay closed the socket without a word"))??;
        if let Message::Binary(frame) = message {
            if let Some(message) = reassembler.push_message(&frame)? {
                return Ok(message);
            }
        } else if let Message::Close(_) = message {
            anyhow::bail!("the relay closed the socket without a word");
        }
    }
}

/// Sends `message` on `socket`, in as many frames as it takes.
pub async fn send(socket: &mut Socket, message: &ToRelay) -> anyhow::Result<()> {
    for frame in encode_frames(message) {
        socket.send(Message::Binary(frame.into())).await?;
    }
    Ok(())
}

/// The reason of the relay's next message, which must be a refusal.
pub async fn refusal(socket: &mut Socket) -> anyhow::Result<String> {
    match receive(socket, 1 << 20).await? {
        ToVolunteer::Refused { reason } => Ok(reason),
        other => anyhow::bail!("expected a refusal, got {other:?}"),
    }
}

/// Whether the relay closes `socket` within 15 s (reading and dropping what comes).
pub async fn closes(socket: &mut Socket) -> bool {
    tokio::time::timeout(Duration::from_secs(15), async {
        loop {
            match socket.next().await {
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return,
                Some(Ok(_)) => {}
            }
        }
    })
    .await
    .is_ok()
}

/// A CPU volunteer's hello for `key`, its proof signing `binding`.
pub fn hello(key: &WalletKey, binding: &Binding) -> ToRelay {
    ToRelay::Hello {
        version: PROTOCOL_VERSION,
        client: "test-ws/0".into(),
        device: DeviceInfo {
            adapter: "CPU".into(),
            backend: "cpu".into(),
            fallback: true,
        },
        wallet: key.address(),
        site: None,
        proof: key.sign_binding(binding),
    }
}
