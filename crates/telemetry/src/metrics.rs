//! Prometheus registries with lightcl's naming.

use prometheus_client::registry::Registry;

/// A registry whose metrics are all prefixed `lightcl_<service>_` (dashes become underscores),
/// e.g. `registry("engine-driver")` → `lightcl_engine_driver_*`.
///
/// ```
/// use prometheus_client::metrics::counter::Counter;
/// let mut reg = lightcl_telemetry::metrics::registry("poller");
/// let polls = Counter::<u64>::default();
/// reg.register("polls", "Polls of the source", polls.clone()); // lightcl_poller_polls_total
/// ```
pub fn registry(service: &str) -> Registry {
    Registry::with_prefix(prefix(service))
}

/// `lightcl_<service>` with dashes replaced by underscores.
pub fn prefix(service: &str) -> String {
    format!("lightcl_{}", service.replace('-', "_"))
}

#[cfg(test)]
mod tests {
    use prometheus_client::metrics::counter::Counter;

    use super::*;

    #[test]
    fn names_are_prefixed() {
        let mut reg = registry("engine-driver");
        let c: Counter = Counter::default();
        reg.register("fcu", "FCUs sent", c.clone());
        c.inc();
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &reg).unwrap();
        assert!(out.contains("lightcl_engine_driver_fcu_total 1"), "{out}");
    }
}
