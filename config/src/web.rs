//! `<web>`: the public web endpoints (badge, widget, watch stream, status page) and CORS.
//!
//! ```xml
//! <web chat-url="https://chat.example.com/?to={id}" allowed-origins="https://a.example,https://b.example"
//!      unknown="show"/>
//! ```
//!
//! Without `<web>` those endpoints are off (404) and no CORS header is ever sent. Nothing here
//! reads a file; `parse.rs` calls [`Web::from_attrs`].

/// What an unknown user looks like on the public endpoints.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unknown {
    /// Exactly like an offline user (the default: nobody learns which ids exist).
    Hide,
    /// As unknown (`known: false`, a distinct badge).
    Show,
}

/// Which origins may read the API from a browser.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Origins {
    /// `allowed-origins="*"`: any origin (written so on purpose).
    Any,
    /// These exact origins (`scheme://host[:port]`, compared byte for byte, lower-cased).
    List(Vec<String>),
}

impl Origins {
    /// Whether a browser request from `origin` may read the answer.
    pub fn allows(&self, origin: &str) -> bool {
        match self {
            Self::Any => true,
            Self::List(l) => l.iter().any(|o| o.eq_ignore_ascii_case(origin)),
        }
    }
}

/// The `<web>` element.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Web {
    /// Template of the chat link around a status, with `{id}` where the IM id goes; `None`: no
    /// link.
    pub chat_url: Option<String>,
    /// CORS origins (`None`: no `Access-Control-Allow-Origin` for anyone).
    pub allowed_origins: Option<Origins>,
    /// What an unknown user looks like.
    pub unknown: Unknown,
    /// Most open watch streams (SSE and raw-TCP subscribe) on this node.
    pub max_watchers: usize,
    /// Changes kept for `Last-Event-ID` resumption (at least this many, and at least 60 s).
    pub retention_changes: usize,
}

impl Web {
    /// Builds the element from its attribute values; `Err((attribute, message))` names the
    /// attribute that is wrong.
    pub fn from_attrs(
        chat_url: Option<&str>,
        allowed_origins: Option<&str>,
        unknown: Option<&str>,
        max_watchers: Option<u64>,
        retention_changes: Option<u64>,
    ) -> Result<Self, (&'static str, String)> {
        let chat_url = match chat_url {
            None => None,
            Some(t) => {
                if t.matches("{id}").count() != 1 {
                    return Err((
                        "chat-url",
                        format!("bad `chat-url` {t:?}: expected a template with `{{id}}` once"),
                    ));
                }
                if t.chars()
                    .any(|c| c.is_control() || c == '"' || c == '<' || c == '>')
                {
                    return Err((
                        "chat-url",
                        format!("bad `chat-url` {t:?}: control characters, quotes and angle brackets are not allowed"),
                    ));
                }
                let scheme_ok = t.split_once(':').is_some_and(|(s, _)| {
                    !s.is_empty()
                        && s.chars()
                            .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
                }) && !t.to_ascii_lowercase().starts_with("javascript:")
                    && !t.to_ascii_lowercase().starts_with("data:");
                if !scheme_ok {
                    return Err((
                        "chat-url",
                        format!("bad `chat-url` {t:?}: expected a URL or URI with a scheme (https:, im:, xmpp:, ...)"),
                    ));
                }
                Some(t.to_owned())
            }
        };
        let allowed_origins = match allowed_origins {
            None => None,
            Some("*") => Some(Origins::Any),
            Some(list) => {
                let mut v = Vec::new();
                for o in list.split(',').map(str::trim) {
                    let ok = (o.starts_with("http://") || o.starts_with("https://"))
                        && !o.ends_with('/')
                        && o.len() > "https://".len()
                        && !o.contains(['*', ' ', '?', '#']);
                    if !ok {
                        return Err((
                            "allowed-origins",
                            format!(
                                "bad origin {o:?} in `allowed-origins`: expected scheme://host[:port] \
                                 (comma-separated), or `*` alone"
                            ),
                        ));
                    }
                    v.push(o.to_ascii_lowercase());
                }
                Some(Origins::List(v))
            }
        };
        let unknown = match unknown {
            None | Some("hide") => Unknown::Hide,
            Some("show") => Unknown::Show,
            Some(other) => {
                return Err((
                    "unknown",
                    format!("bad `unknown` {other:?}: expected hide or show"),
                ))
            }
        };
        Ok(Self {
            chat_url,
            allowed_origins,
            unknown,
            max_watchers: max_watchers.map_or(10_000, |x| x as usize),
            retention_changes: retention_changes.map_or(10_000, |x| x as usize),
        })
    }
}
