//! `chordal chat`: a chat room over the ring.

use anyhow::{bail, Context};
use chordal::chat::client::{fetch_history, follow, Event, Follow, Route, Sender};
use chordal::chat::screen::{clean, clock, Action, Screen};
use chordal::clock::wall_ms;
use chordal::room::onion::MAX_HOPS;
use chordal::room::{Message, Room, MAX_NICK};
use clap::Args;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::Duration;
use tokio::io::AsyncBufReadExt;
use tokio::sync::mpsc;

#[derive(Args, Debug)]
pub struct ChatArgs {
    /// The room's name. Nodes storing the room see neither it nor what is
    /// said: only a location derived from it and sealed messages.
    #[arg(long)]
    room: String,
    /// Your nickname in the room [default: a random one, anon-XXXX].
    #[arg(long)]
    nick: Option<String>,
    /// A file holding the room's passphrase (trailing newline ignored):
    /// with one, only those who know it can find or read the room.
    #[arg(long, value_name = "PATH")]
    passphrase_file: Option<PathBuf>,
    /// A node of the ring; give it more than once to have others to fall
    /// back on.
    #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:10001")]
    via: Vec<String>,
    /// Messages of history shown on entry, the most recent.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(0..=1000))]
    history: u32,
    /// How far back history reaches.
    #[arg(long, default_value = "24h", value_parser = humantime::parse_duration)]
    since: Duration,
    /// How long the ring keeps each message sent.
    #[arg(long, default_value = "24h", value_parser = humantime::parse_duration)]
    retention: Duration,
    /// Print the room's messages to stdout, one a line, as they arrive
    /// (with piped stdin, also send each line read).
    #[arg(long)]
    print: bool,
    /// Relays each message passes through before it is stored: the node
    /// storing it sees only the last relay, and no relay sees both who
    /// sent it and where it goes.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u8).range(1..=MAX_HOPS as i64))]
    hops: u8,
    /// Send straight to a node instead of through relays (faster; that
    /// node learns your address).
    #[arg(long, conflicts_with = "hops")]
    direct: bool,
    /// The local address to connect from, on a machine with several.
    #[arg(long, value_name = "IP")]
    bind: Option<std::net::IpAddr>,
    /// Deadline of each request to a node (a message through relays waits
    /// for every hop and the ring's write).
    #[arg(long, default_value = "15s", value_parser = humantime::parse_duration)]
    timeout: Duration,
}

pub async fn chat(args: ChatArgs) -> anyhow::Result<()> {
    let passphrase = match &args.passphrase_file {
        Some(path) => {
            let mut bytes = std::fs::read(path)
                .with_context(|| format!("cannot read the passphrase file {}", path.display()))?;
            while matches!(bytes.last(), Some(b'\n' | b'\r')) {
                bytes.pop();
            }
            if bytes.is_empty() {
                bail!("the passphrase file {} is empty", path.display());
            }
            Some(bytes)
        }
        None => None,
    };
    let nick = match args.nick.clone() {
        Some(nick) if nick.is_empty() || nick.len() > MAX_NICK => {
            bail!("a nickname is 1 to {MAX_NICK} bytes")
        }
        Some(nick) => nick,
        None => format!("anon-{:04x}", rand::random::<u16>()),
    };
    if args.retention.is_zero() {
        bail!("--retention must be more than zero");
    }
    let room = Room::new(&args.room, passphrase.as_deref());
    let piped = !std::io::stdin().is_terminal();
    // Relays wanted (none sent directly): said when fewer are found.
    let hops = if args.direct {
        0
    } else {
        usize::from(args.hops)
    };
    let route = if args.direct {
        Route::Direct
    } else {
        Route::Onion {
            hops: usize::from(args.hops),
        }
    };
    let sender = Sender::new(
        room.clone(),
        args.via.clone(),
        args.timeout,
        args.retention,
        route,
    )
    .bind(args.bind);
    let following = Follow {
        via: args.via.clone(),
        since_ms: wall_ms().saturating_sub(args.since.as_millis() as u64),
        history: args.history,
        timeout: args.timeout,
        from: args.bind,
    };
    if !piped && !args.print {
        return interactive(room, following, sender, &args.room, &nick, hops).await;
    }
    if !args.print {
        return send_lines(sender, nick, hops).await;
    }
    let (events, mut received) = mpsc::channel(256);
    let watcher = tokio::spawn(follow(room, following, events));
    let sending = piped.then(|| tokio::spawn(send_lines(sender, nick, hops)));
    let name = args.room.clone();
    while let Some(event) = received.recv().await {
        match event {
            Event::Message(message) => println!("{}", line(&message)),
            Event::Watching(owner) => eprintln!("chat: watching room {name} at {owner}"),
            Event::Warning(warning) => eprintln!("chat: {warning}"),
        }
    }
    watcher.abort();
    if let Some(sending) = sending {
        sending.abort();
    }
    Ok(())
}

/// Sends each non-empty line of stdin; a line that cannot be sent is
/// reported and the rest still go.
async fn send_lines(mut sender: Sender, nick: String, hops: usize) -> anyhow::Result<()> {
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    let mut failed = 0;
    while let Some(text) = lines.next_line().await.context("cannot read stdin")? {
        if text.trim().is_empty() {
            continue;
        }
        if let Err(error) = sender.send(&nick, &text).await {
            eprintln!("chat: not sent: {error}");
            failed += 1;
        }
        if let Some(relays) = sender.circuit_changed() {
            eprintln!("chat: {}", circuit_notice(&relays, hops));
        }
    }
    if failed > 0 {
        bail!("{failed} messages were not sent");
    }
    Ok(())
}

fn circuit_notice(relays: &[String], wanted: usize) -> String {
    let mut notice = format!("sending through relays {}", relays.join(" -> "));
    if relays.len() < wanted {
        notice.push_str(&format!(
            " (only {} of the {wanted} relays asked for: no more processes found; \
             fewer relays hide less)",
            relays.len()
        ));
    }
    notice
}

/// A message as one line: `[HH:MM:SS] <nick> text`, UTC, without control
/// characters (a sender must not be able to redraw the reader's terminal).
fn line(message: &Message) -> String {
    format!(
        "[{}] <{}> {}",
        clock(message.sent_at_ms),
        clean(&message.nick),
        clean(&message.text)
    )
}

/// The chat screen on this terminal until `/quit` or Ctrl-C.
async fn interactive(
    room: Room,
    following: Follow,
    sender: Sender,
    name: &str,
    nick: &str,
    hops: usize,
) -> anyhow::Result<()> {
    use crossterm::event::{Event as TermEvent, EventStream};
    use futures::StreamExt;

    let mut screen = Screen::new(name, nick);
    let (events, mut received) = mpsc::channel(256);
    let watcher = tokio::spawn(follow(room.clone(), following.clone(), events.clone()));
    // Sends one at a time, in order, without holding up the screen.
    let (outbox, mut outgoing) = mpsc::channel::<(String, String)>(64);
    let sending = {
        let events = events.clone();
        let mut sender = sender;
        tokio::spawn(async move {
            while let Some((nick, text)) = outgoing.recv().await {
                if let Err(error) = sender.send(&nick, &text).await {
                    let warning = Event::Warning(format!("not sent: {error}"));
                    if events.send(warning).await.is_err() {
                        return;
                    }
                }
                if let Some(relays) = sender.circuit_changed() {
                    if events
                        .send(Event::Warning(circuit_notice(&relays, hops)))
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
            }
        })
    };
    let mut terminal = ratatui::init();
    let mut keys = EventStream::new();
    let outcome: anyhow::Result<()> = loop {
        if let Err(error) = terminal.draw(|frame| screen.render(frame)) {
            break Err(error.into());
        }
        tokio::select! {
            event = received.recv() => match event {
                Some(event) => screen.on_event(event, wall_ms()),
                None => break Ok(()),
            },
            key = keys.next() => match key {
                Some(Ok(TermEvent::Key(key))) => match screen.on_key(key, wall_ms()) {
                    Action::None => {}
                    Action::Quit => break Ok(()),
                    Action::Send { nick, text } => {
                        if outbox.try_send((nick, text)).is_err() {
                            screen.on_event(Event::Warning("too many messages waiting to be sent".into()), wall_ms());
                        }
                    }
                    Action::History(count) => {
                        let (room, following, events) = (room.clone(), following.clone(), events.clone());
                        tokio::spawn(async move {
                            let report = match fetch_history(&room, &following, count).await {
                                Ok((messages, skipped)) => {
                                    let found = messages.len();
                                    for message in messages {
                                        if events.send(Event::Message(message)).await.is_err() {
                                            return;
                                        }
                                    }
                                    format!("history: {found} messages found{}", if skipped > 0 { format!(", {skipped} skipped (not of this room's key)") } else { String::new() })
                                }
                                Err(error) => format!("history: {error}"),
                            };
                            events.send(Event::Warning(report)).await.ok();
                        });
                    }
                },
                Some(Ok(_)) => {} // resize and the like: redrawn above
                Some(Err(error)) => break Err(error.into()),
                None => break Ok(()),
            },
        }
    };
    ratatui::restore();
    watcher.abort();
    sending.abort();
    outcome
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_shows_utc_time_and_never_a_control_character() {
        let message = Message {
            id: [0; 16],
            sent_at_ms: (13 * 3600 + 4 * 60 + 5) * 1000 + 999,
            nick: "ada\u{1b}[2J".into(),
            text: "hi\rthere\u{7}".into(),
        };
        assert_eq!(
            line(&message),
            "[13:04:05] <ada\u{fffd}[2J> hi\u{fffd}there\u{fffd}"
        );
    }
}
