//! Collector configuration (`collector.toml`, `OUTLIER_COLLECTOR__*`).

use outlier_common::kafka::KafkaConfig;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct CollectorConfig {
    pub kafka: KafkaConfig,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn example_config_is_the_default() {
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../compose/collector.toml");
        let cfg: CollectorConfig =
            outlier_common::config::load("OUTLIER_COLLECTOR_EXAMPLE_TEST", Some(&path)).unwrap();
        assert_eq!(cfg, CollectorConfig::default());
    }
}
