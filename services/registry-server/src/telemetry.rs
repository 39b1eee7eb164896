//! Structured logs with `tracing`: text for people, JSON for collectors.

use tracing_subscriber::EnvFilter;
use tracing_subscriber::filter::Directive;

use crate::config::{LogConfig, LogFormat};

/// Targets capped at `info` whatever the filter says: below it they print
/// what they hold in Debug form. The AWS SDK's runtime logs the resolved
/// identity (the access key id) at `debug` and whole response bodies (ECR's
/// authorization token) at `trace`; the canary run (`scripts/canary`) found
/// both.
const CAPPED: [&str; 3] = ["aws_smithy_runtime", "aws_smithy_runtime_api", "aws_sigv4"];

/// The filter of the server's logs: `RUST_LOG` when set, else `default`,
/// with [`CAPPED`] targets at `info` at most.
pub fn filter(default: &str) -> EnvFilter {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    CAPPED.iter().fold(filter, |filter, target| {
        match format!("{target}=info").parse::<Directive>() {
            Ok(directive) => filter.add_directive(directive),
            Err(_) => filter,
        }
    })
}

/// Installs the global subscriber. `RUST_LOG` wins over the configured filter.
pub fn init(log: &LogConfig) {
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter(&log.filter))
        .with_target(false);
    let _ = match log.format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}
