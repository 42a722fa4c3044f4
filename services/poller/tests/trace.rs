//! Tracing: each poll runs in span `poller.poll` with the heads it read, and the publish inside
//! it puts the W3C trace context in the NATS headers. (Own test binary: it installs a global
//! tracing subscriber.)

mod common;

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};

use common::*;
use opentelemetry::trace::TracerProvider as _;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;

type Fields = BTreeMap<String, String>;

/// Records the fields of every closed `poller.poll` span.
#[derive(Clone, Default)]
struct PollSpans(Arc<Mutex<Vec<Fields>>>);

struct Visitor<'a>(&'a mut Fields);

impl Visit for Visitor<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.insert(field.name().to_owned(), format!("{value:?}"));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.to_owned());
    }
}

impl<S: tracing::Subscriber + for<'a> LookupSpan<'a>> tracing_subscriber::Layer<S> for PollSpans {
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        if attrs.metadata().name() != "poller.poll" {
            return;
        }
        let mut fields = Fields::new();
        attrs.record(&mut Visitor(&mut fields));
        if let Some(span) = ctx.span(id) {
            span.extensions_mut().insert(fields);
        }
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        if let Some(span) = ctx.span(id)
            && let Some(fields) = span.extensions_mut().get_mut::<Fields>()
        {
            values.record(&mut Visitor(fields));
        }
    }

    fn on_close(&self, id: Id, ctx: Context<'_, S>) {
        if let Some(span) = ctx.span(&id)
            && let Some(fields) = span.extensions().get::<Fields>()
        {
            self.0.lock().unwrap().push(fields.clone());
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn each_poll_is_a_span_and_its_publish_carries_the_trace() {
    let spans = PollSpans::default();
    let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder().build();
    let subscriber = tracing_subscriber::registry()
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")))
        .with(spans.clone());
    tracing::subscriber::set_global_default(subscriber).unwrap();
    lightcl_telemetry::install_propagator();

    let env = Env::new().await;
    let p = env.start(&[]).await;
    env.source.set_status(status(1));
    let stored = env.wait_stored(SRC, 2).await;
    p.stop().await;

    let mut traces = HashSet::new();
    for m in &stored {
        let parent = m.traceparent.as_deref().expect("a stored status carries traceparent");
        let parts: Vec<&str> = parent.split('-').collect();
        assert_eq!(parts.len(), 4, "{parent}");
        assert_eq!((parts[1].len(), parts[2].len()), (32, 16), "{parent}");
        assert_ne!(parts[1], "0".repeat(32), "{parent}");
        assert!(traces.insert(parts[1].to_owned()), "each poll is its own trace: {parent}");

        // The span of the poll that published it has the status's heads.
        let seq = m.raw.poll_seq.to_string();
        let all = spans.0.lock().unwrap().clone();
        let span = all
            .iter()
            .find(|f| f.get("poll_seq") == Some(&seq))
            .unwrap_or_else(|| panic!("no poller.poll span with poll_seq {seq}: {all:?}"));
        let field = |k: &str| span.get(k).map(String::as_str);
        assert_eq!(field("chain_id"), Some("10"));
        assert_eq!(field("source_id"), Some(SRC));
        let unsafe_l2 = m.status.unsafe_l2.number.to_string();
        let safe_l2 = m.status.safe_l2.number.to_string();
        let finalized_l2 = m.status.finalized_l2.number.to_string();
        assert_eq!(field("unsafe_l2"), Some(unsafe_l2.as_str()), "{span:?}");
        assert_eq!(field("safe_l2"), Some(safe_l2.as_str()), "{span:?}");
        assert_eq!(field("finalized_l2"), Some(finalized_l2.as_str()), "{span:?}");
    }
}
