//! How the binaries print an error: its chain of causes joined with `: `, where a cause
//! whose text the message before it already holds is left out (the library errors put
//! their cause in their own message, so anyhow's `{:#}` printed it twice).

/// `error` and its causes, each once.
pub fn error_text(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    // a chain is finite, but the guard costs nothing
    let mut steps = 0;
    while let Some(c) = cause {
        let part = c.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        cause = c.source();
        steps += 1;
        if steps == 64 {
            break;
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    enum Low {
        #[error("the socket is gone")]
        Gone,
    }

    #[derive(Debug, thiserror::Error)]
    enum High {
        #[error("opening q.sock: {source}")]
        Open { source: Low },
        #[error("opening q.sock")]
        Bare { source: Low },
    }

    #[test]
    fn each_cause_once() {
        let e = High::Open { source: Low::Gone };
        assert_eq!(error_text(&e), "opening q.sock: the socket is gone");
        let e = High::Bare { source: Low::Gone };
        assert_eq!(error_text(&e), "opening q.sock: the socket is gone");
        let any = anyhow::Error::new(High::Open { source: Low::Gone }).context("detector");
        assert_eq!(
            error_text(any.as_ref()),
            "detector: opening q.sock: the socket is gone"
        );
    }
}
