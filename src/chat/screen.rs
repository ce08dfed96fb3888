//! The interactive chat screen: what it shows and how it reacts to keys
//! and to the room, kept apart from the terminal so that it can be tested
//! as plain state. `cmd/chat.rs` runs it on a real terminal (ratatui on
//! crossterm): the screen is redrawn whole on every change, so a message
//! arriving while the user types never garbles the input line.

use super::client::Event;
use crate::room::{Message, MAX_NICK, MAX_TEXT};
use crossterm::event::{KeyCode, KeyEvent, KeyEventKind, KeyModifiers};
use ratatui::layout::{Constraint, Layout};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::Paragraph;
use ratatui::Frame;
use std::collections::BTreeMap;

/// Lines kept on screen; older ones are dropped.
const MAX_LINES: usize = 10_000;
/// How long a nickname counts as "seen recently" for `/who`.
const WHO_WINDOW_MS: u64 = 15 * 60 * 1000;

/// What the user asked for that the screen cannot do alone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    None,
    /// Send this text as `nick`.
    Send {
        nick: String,
        text: String,
    },
    /// Show the room's last N messages (fetched from the ring).
    History(u32),
    Quit,
}

/// One line of the conversation.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Entry {
    Message(Message),
    /// Something from the program, at this time (ms), shown in grey.
    Notice(u64, String),
}

impl Entry {
    /// Messages sort by send time; notices by when they were made.
    fn order(&self) -> (u64, [u8; 16]) {
        match self {
            Entry::Message(m) => (m.sent_at_ms, m.id),
            Entry::Notice(at, _) => (*at, [0xff; 16]),
        }
    }
}

/// The chat screen's state.
pub struct Screen {
    room: String,
    nick: String,
    /// In send order; a message that arrives late is put in its place.
    entries: Vec<Entry>,
    input: String,
    /// Lines scrolled back from the bottom.
    scroll: usize,
    /// Nicknames by the last time they said something.
    seen: BTreeMap<String, u64>,
    status: String,
}

impl Screen {
    pub fn new(room: &str, nick: &str) -> Screen {
        let mut screen = Screen {
            room: room.to_string(),
            nick: nick.to_string(),
            entries: Vec::new(),
            input: String::new(),
            scroll: 0,
            seen: BTreeMap::new(),
            status: "finding the room".into(),
        };
        screen.notice(
            crate::clock::wall_ms(),
            "commands: /nick NAME, /who, /history N, /quit (PageUp/PageDown scroll)",
        );
        screen
    }

    pub fn nick(&self) -> &str {
        &self.nick
    }

    /// The text being typed.
    pub fn input(&self) -> &str {
        &self.input
    }

    fn notice(&mut self, at_ms: u64, text: &str) {
        self.insert(Entry::Notice(at_ms, text.to_string()));
    }

    fn insert(&mut self, entry: Entry) {
        let at = self.entries.partition_point(|e| e.order() <= entry.order());
        self.entries.insert(at, entry);
        if self.entries.len() > MAX_LINES {
            self.entries.remove(0);
        }
    }

    /// Shows what following the room reported.
    pub fn on_event(&mut self, event: Event, now_ms: u64) {
        match event {
            Event::Message(message) => self.add_message(message),
            Event::Watching(owner) => {
                self.status = format!("in {} (watching at {owner})", self.room)
            }
            Event::Warning(warning) => self.notice(now_ms, &warning),
        }
    }

    /// Adds a message unless it is already shown.
    pub fn add_message(&mut self, message: Message) {
        let shown = self.entries.iter().any(|e| matches!(e, Entry::Message(m) if m.id == message.id && m.sent_at_ms == message.sent_at_ms));
        if shown {
            return;
        }
        let last = self.seen.entry(message.nick.clone()).or_default();
        *last = (*last).max(message.sent_at_ms);
        self.insert(Entry::Message(message));
    }

    /// Reacts to a key; returns what the caller must do.
    pub fn on_key(&mut self, key: KeyEvent, now_ms: u64) -> Action {
        if key.kind == KeyEventKind::Release {
            return Action::None;
        }
        let control = key.modifiers.contains(KeyModifiers::CONTROL);
        match key.code {
            KeyCode::Char('c' | 'd') if control => Action::Quit,
            KeyCode::Char('u') if control => {
                self.input.clear();
                Action::None
            }
            KeyCode::Char(c) if !control => {
                if self.input.len() + c.len_utf8() <= MAX_TEXT {
                    self.input.push(c);
                }
                Action::None
            }
            KeyCode::Backspace => {
                self.input.pop();
                Action::None
            }
            KeyCode::PageUp => {
                self.scroll = (self.scroll + 10).min(self.entries.len().saturating_sub(1));
                Action::None
            }
            KeyCode::PageDown => {
                self.scroll = self.scroll.saturating_sub(10);
                Action::None
            }
            KeyCode::Enter => {
                let line = std::mem::take(&mut self.input);
                self.scroll = 0;
                self.submit(line.trim(), now_ms)
            }
            _ => Action::None,
        }
    }

    fn submit(&mut self, line: &str, now_ms: u64) -> Action {
        if line.is_empty() {
            return Action::None;
        }
        let Some(command) = line.strip_prefix('/') else {
            return Action::Send {
                nick: self.nick.clone(),
                text: line.to_string(),
            };
        };
        let (name, argument) = command.split_once(' ').unwrap_or((command, ""));
        let argument = argument.trim();
        match name {
            "quit" | "exit" => Action::Quit,
            "nick" if !argument.is_empty() && argument.len() <= MAX_NICK => {
                self.notice(
                    now_ms,
                    &format!("you are now {argument} (were {})", self.nick),
                );
                self.nick = argument.to_string();
                Action::None
            }
            "nick" => {
                self.notice(
                    now_ms,
                    &format!("usage: /nick NAME (1 to {MAX_NICK} bytes)"),
                );
                Action::None
            }
            "who" => {
                let recent: Vec<&str> = self
                    .seen
                    .iter()
                    .filter(|(_, at)| now_ms.saturating_sub(**at) <= WHO_WINDOW_MS)
                    .map(|(nick, _)| nick.as_str())
                    .collect();
                let text = if recent.is_empty() {
                    "nobody has said anything in the last 15 minutes".to_string()
                } else {
                    format!(
                        "said something in the last 15 minutes: {}",
                        recent.join(", ")
                    )
                };
                self.notice(now_ms, &text);
                Action::None
            }
            "history" => match argument.parse::<u32>() {
                Ok(n) if (1..=1000).contains(&n) => {
                    self.notice(now_ms, &format!("fetching the last {n} messages"));
                    Action::History(n)
                }
                _ => {
                    self.notice(now_ms, "usage: /history N (1 to 1000)");
                    Action::None
                }
            },
            _ => {
                self.notice(
                    now_ms,
                    &format!("unknown command /{name}: /nick NAME, /who, /history N, /quit"),
                );
                Action::None
            }
        }
    }

    /// The conversation as display lines of at most `width` characters.
    fn lines(&self, width: usize) -> Vec<Line<'static>> {
        let width = width.max(10);
        let mut lines = Vec::new();
        for entry in &self.entries {
            let (head, head_style, text, text_style) = match entry {
                Entry::Message(m) => (
                    format!("{} <{}> ", clock(m.sent_at_ms), clean(&m.nick)),
                    Style::default()
                        .fg(nick_colour(&m.nick))
                        .add_modifier(Modifier::BOLD),
                    clean(&m.text),
                    Style::default(),
                ),
                Entry::Notice(at, text) => (
                    format!("{} -- ", clock(*at)),
                    Style::default().fg(Color::DarkGray),
                    clean(text),
                    Style::default().fg(Color::DarkGray),
                ),
            };
            let mut chars: Vec<char> = text.chars().collect();
            let first = width.saturating_sub(head.chars().count()).max(1);
            let rest: Vec<char> = chars.split_off(first.min(chars.len()));
            lines.push(Line::from(vec![
                Span::styled(head, head_style),
                Span::styled(chars.into_iter().collect::<String>(), text_style),
            ]));
            for chunk in rest.chunks(width) {
                lines.push(Line::from(Span::styled(
                    chunk.iter().collect::<String>(),
                    text_style,
                )));
            }
        }
        lines
    }

    /// Draws the screen: the conversation, a status line, the input line.
    pub fn render(&self, frame: &mut Frame) {
        let [talk, status, input] = Layout::vertical([
            Constraint::Min(1),
            Constraint::Length(1),
            Constraint::Length(1),
        ])
        .areas(frame.area());
        let lines = self.lines(talk.width as usize);
        let height = talk.height as usize;
        let end = lines
            .len()
            .saturating_sub(self.scroll.min(lines.len().saturating_sub(height)));
        let start = end.saturating_sub(height);
        frame.render_widget(Paragraph::new(lines[start..end].to_vec()), talk);
        let scrolled = if self.scroll > 0 {
            " [scrolled back]"
        } else {
            ""
        };
        frame.render_widget(
            Paragraph::new(format!(" {} as {}{scrolled}", self.status, self.nick))
                .style(Style::default().fg(Color::Black).bg(Color::Cyan)),
            status,
        );
        // The end of the input when it is wider than the screen.
        let prompt = "> ";
        let room = (input.width as usize)
            .saturating_sub(prompt.len() + 1)
            .max(1);
        let typed: Vec<char> = self.input.chars().collect();
        let shown: String = typed[typed.len().saturating_sub(room)..].iter().collect();
        let cursor_x = input.x + (prompt.len() + shown.chars().count()) as u16;
        frame.render_widget(Paragraph::new(format!("{prompt}{shown}")), input);
        frame.set_cursor_position((
            cursor_x.min(input.x + input.width.saturating_sub(1)),
            input.y,
        ));
    }
}

/// `HH:MM:SS`, UTC.
pub fn clock(ms: u64) -> String {
    let seconds = ms / 1000;
    format!(
        "{:02}:{:02}:{:02}",
        (seconds / 3600) % 24,
        (seconds / 60) % 60,
        seconds % 60
    )
}

/// Text with every control character replaced: a sender must not be able
/// to move the reader's cursor or redraw the reader's terminal.
pub fn clean(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { '\u{fffd}' } else { c })
        .collect()
}

fn nick_colour(nick: &str) -> Color {
    const COLOURS: [Color; 6] = [
        Color::Green,
        Color::Yellow,
        Color::Blue,
        Color::Magenta,
        Color::Cyan,
        Color::Red,
    ];
    COLOURS[blake3::hash(nick.as_bytes()).as_bytes()[0] as usize % COLOURS.len()]
}

#[cfg(test)]
mod tests {
    use super::*;
    use ratatui::backend::TestBackend;
    use ratatui::Terminal;

    fn key(code: KeyCode) -> KeyEvent {
        KeyEvent::new(code, KeyModifiers::NONE)
    }

    fn typed(screen: &mut Screen, text: &str) -> Action {
        for c in text.chars() {
            screen.on_key(key(KeyCode::Char(c)), 0);
        }
        screen.on_key(key(KeyCode::Enter), 1_000)
    }

    /// A message sent `at` ms after the screen's opening notice.
    fn message(nick: &str, at: u64, text: &str) -> Message {
        Message {
            id: [at as u8; 16],
            sent_at_ms: crate::clock::wall_ms() + 60_000 + at,
            nick: nick.into(),
            text: text.into(),
        }
    }

    fn drawn(screen: &Screen, width: u16, height: u16) -> Vec<String> {
        let mut terminal = Terminal::new(TestBackend::new(width, height)).unwrap();
        terminal.draw(|frame| screen.render(frame)).unwrap();
        let buffer = terminal.backend().buffer();
        (0..height)
            .map(|y| {
                (0..width)
                    .map(|x| buffer[(x, y)].symbol().to_string())
                    .collect::<String>()
                    .trim_end()
                    .to_string()
            })
            .collect()
    }

    #[test]
    fn commands_change_the_nick_list_who_ask_for_history_and_quit() {
        let mut screen = Screen::new("lobby", "anon-1");
        assert_eq!(
            typed(&mut screen, "hello"),
            Action::Send {
                nick: "anon-1".into(),
                text: "hello".into()
            }
        );
        assert_eq!(typed(&mut screen, "/nick ada"), Action::None);
        assert_eq!(screen.nick(), "ada");
        assert_eq!(typed(&mut screen, "/nick "), Action::None);
        assert_eq!(screen.nick(), "ada");
        screen.add_message(message("bob", 900, "hi"));
        typed(&mut screen, "/who");
        assert!(drawn(&screen, 80, 10)
            .iter()
            .any(|l| l.contains("in the last 15 minutes: bob")));
        assert_eq!(typed(&mut screen, "/history 50"), Action::History(50));
        assert_eq!(typed(&mut screen, "/history 0"), Action::None);
        assert_eq!(typed(&mut screen, "/quit"), Action::Quit);
        assert_eq!(
            screen.on_key(KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL), 0),
            Action::Quit
        );
    }

    #[test]
    fn a_message_arriving_while_typing_leaves_the_input_line_whole() {
        let mut screen = Screen::new("lobby", "ada");
        for c in "half a sent".chars() {
            screen.on_key(key(KeyCode::Char(c)), 0);
        }
        screen.on_event(Event::Message(message("bob", 5_000, "interrupting")), 5_000);
        let lines = drawn(&screen, 60, 8);
        assert_eq!(lines[7], "> half a sent");
        assert!(lines.iter().any(|l| l.contains("<bob> interrupting")));
        assert_eq!(screen.input(), "half a sent");
    }

    #[test]
    fn messages_show_in_send_order_once_and_without_control_characters() {
        let mut screen = Screen::new("lobby", "ada");
        screen.add_message(message("bob", 3_000, "third"));
        screen.add_message(message("bob", 1_000, "first\u{1b}[2J"));
        screen.add_message(message("bob", 2_000, "second"));
        screen.add_message(message("bob", 2_000, "second"));
        let lines = drawn(&screen, 60, 8);
        let texts: Vec<&String> = lines.iter().filter(|l| l.contains("<bob>")).collect();
        assert_eq!(texts.len(), 3);
        assert!(texts[0].ends_with("first\u{fffd}[2J"));
        assert!(texts[1].ends_with("second") && texts[2].ends_with("third"));
    }

    #[test]
    fn long_messages_wrap_and_the_latest_lines_stay_in_view() {
        let mut screen = Screen::new("lobby", "ada");
        for i in 0..30 {
            screen.add_message(message("bob", 1_000 + i, &format!("line {i}")));
        }
        screen.add_message(message("bob", 2_000, &"x".repeat(70)));
        let lines = drawn(&screen, 40, 8);
        // Six lines of conversation: the long message wrapped over the
        // last three (25 + 40 + 5 characters), the one before above it.
        assert!(lines[2].ends_with("<bob> line 29"));
        assert!(lines[3].ends_with(&format!("<bob> {}", "x".repeat(25))));
        assert_eq!(lines[4], "x".repeat(40));
        assert_eq!(lines[5], "x".repeat(5));
        screen.on_key(key(KeyCode::PageUp), 0);
        assert!(drawn(&screen, 40, 8).iter().any(|l| l.contains("line 2")));
    }
}
