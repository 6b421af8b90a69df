//! What an hour of a training instance costs, for `backend: auto`'s cost
//! estimates: approximate on-demand list prices of SageMaker training in
//! us-east-1 for the types of [`crate::instance::TABLE`] (USD per instance
//! hour), replaced or extended by a JSON file `{"ml.g5.xlarge": 1.41, …}`
//! named by `SWITCHYARD_SAGEMAKER_PRICES` (your region's, your discounts).
//! Managed spot training is assumed to save `SWITCHYARD_SAGEMAKER_SPOT_DISCOUNT`
//! (a fraction, default 0.7).

/// Built-in approximate prices (USD per instance-hour, us-east-1, on-demand).
const BUILT_IN: &[(&str, f64)] = &[
    ("ml.m5.large", 0.115),
    ("ml.m5.xlarge", 0.23),
    ("ml.m5.2xlarge", 0.461),
    ("ml.m5.4xlarge", 0.922),
    ("ml.m5.12xlarge", 2.765),
    ("ml.m5.24xlarge", 5.53),
    ("ml.c5.xlarge", 0.204),
    ("ml.c5.2xlarge", 0.408),
    ("ml.c5.4xlarge", 0.816),
    ("ml.c5.9xlarge", 1.836),
    ("ml.c5.18xlarge", 3.672),
    ("ml.g5.xlarge", 1.408),
    ("ml.g5.2xlarge", 1.515),
    ("ml.g5.4xlarge", 2.03),
    ("ml.g5.8xlarge", 3.06),
    ("ml.g5.12xlarge", 7.09),
    ("ml.g5.24xlarge", 10.18),
    ("ml.g5.48xlarge", 20.36),
    ("ml.p3.2xlarge", 3.825),
    ("ml.p3.8xlarge", 14.688),
    ("ml.p3.16xlarge", 28.152),
    ("ml.p4d.24xlarge", 37.688),
    ("ml.p5.48xlarge", 113.07),
];

/// The assumed saving of managed spot training.
const SPOT_DISCOUNT: f64 = 0.7;

/// The price of an hour of `instance_type`: the file's, else the built-in
/// one; `Err` when the file cannot be read (naming it), `Ok(None)` when no
/// price is known.
pub fn hourly(instance_type: &str) -> Result<Option<f64>, String> {
    if let Ok(path) = std::env::var("SWITCHYARD_SAGEMAKER_PRICES") {
        let text = std::fs::read_to_string(&path)
            .map_err(|e| format!("SWITCHYARD_SAGEMAKER_PRICES: cannot read {path}: {e}"))?;
        let table: std::collections::BTreeMap<String, f64> =
            serde_json::from_str(&text).map_err(|e| {
                format!(
                    "SWITCHYARD_SAGEMAKER_PRICES: {path} is not {{\"ml.type\": USD per hour}}: {e}"
                )
            })?;
        if let Some(p) = table.get(instance_type) {
            if !(p.is_finite() && *p >= 0.0) {
                return Err(format!(
                    "SWITCHYARD_SAGEMAKER_PRICES: {path} gives {instance_type} the price {p}, which is not a price"
                ));
            }
            return Ok(Some(*p));
        }
    }
    Ok(BUILT_IN
        .iter()
        .find(|(t, _)| *t == instance_type)
        .map(|(_, p)| *p))
}

/// The fraction spot training saves.
pub fn spot_discount() -> f64 {
    std::env::var("SWITCHYARD_SAGEMAKER_SPOT_DISCOUNT")
        .ok()
        .and_then(|v| v.trim().parse::<f64>().ok())
        .filter(|d| (0.0..1.0).contains(d))
        .unwrap_or(SPOT_DISCOUNT)
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_known_type_has_a_price() {
        for t in crate::instance::TABLE {
            assert!(super::hourly(t.name).unwrap().is_some(), "{}", t.name);
        }
    }
}
