//! LoRA hyper-parameters and PEFT's `adapter_config.json`, both ways. The file is written
//! with the keys peft 0.21 writes (so `PeftModel.from_pretrained` loads it); reading
//! accepts any peft version's file but refuses settings dsum does not implement (DoRA,
//! trained biases, per-module rank patterns...) by name instead of silently ignoring them.

use serde_json::{json, Value};

use crate::error::{Error, Result};

/// Which linear modules get an adapter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Targets {
    /// peft's `"all-linear"`: every linear layer except the output head.
    AllLinear,
    /// Module names; a module matches a name if its path equals it or ends with `.name`.
    Names(Vec<String>),
}

impl Targets {
    /// From a config value: `"all-linear"`, or names separated by commas.
    pub fn parse(s: &str) -> Self {
        if s.trim() == "all-linear" {
            return Targets::AllLinear;
        }
        Targets::Names(
            s.split(',')
                .map(|t| t.trim().to_string())
                .filter(|t| !t.is_empty())
                .collect(),
        )
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct LoraConfig {
    pub r: usize,
    pub alpha: f64,
    pub dropout: f32,
    pub targets: Targets,
    /// rsLoRA: scaling alpha / sqrt(r) instead of alpha / r.
    pub use_rslora: bool,
}

impl Default for LoraConfig {
    /// The seed's QLoRA setup: r 16, alpha 32, dropout 0.1, all linear layers.
    fn default() -> Self {
        LoraConfig {
            r: 16,
            alpha: 32.0,
            dropout: 0.1,
            targets: Targets::AllLinear,
            use_rslora: false,
        }
    }
}

impl LoraConfig {
    /// The factor on `B·A`: peft computes it in Python floats and applies it in the
    /// weight dtype.
    pub fn scaling(&self) -> f32 {
        if self.use_rslora {
            (self.alpha / (self.r as f64).sqrt()) as f32
        } else {
            (self.alpha / self.r as f64) as f32
        }
    }

    /// Rejects values peft would reject (r = 0, dropout outside [0, 1)).
    pub fn check(&self, source: &str) -> Result<()> {
        if self.r == 0 {
            return Err(Error::config(source, "LoRA `r` must be at least 1"));
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return Err(Error::config(
                source,
                format!("LoRA dropout must be in [0, 1), not {}", self.dropout),
            ));
        }
        if let Targets::Names(n) = &self.targets {
            if n.is_empty() {
                return Err(Error::config(source, "LoRA `targets` lists no module"));
            }
        }
        Ok(())
    }

    /// `adapter_config.json` as peft writes it. `modules` are the module paths the
    /// adapter was attached to (peft writes those for `all-linear`); `causal` picks the
    /// task type.
    pub fn to_peft_json(&self, base_model: &str, causal: bool, modules: &[String]) -> String {
        let targets: Vec<String> = match &self.targets {
            Targets::AllLinear => modules.to_vec(),
            Targets::Names(n) => n.clone(),
        };
        // peft writes an integer alpha as an integer.
        let alpha = if self.alpha.fract() == 0.0 && self.alpha.abs() < 1e15 {
            json!(self.alpha as i64)
        } else {
            json!(self.alpha)
        };
        let v = json!({
            "alpha_pattern": {},
            "auto_mapping": null,
            "base_model_name_or_path": base_model,
            "bias": "none",
            "fan_in_fan_out": false,
            "inference_mode": true,
            "init_lora_weights": true,
            "layer_replication": null,
            "layers_pattern": null,
            "layers_to_transform": null,
            "loftq_config": {},
            "lora_alpha": alpha,
            "lora_bias": false,
            "lora_dropout": self.dropout as f64,
            "megatron_config": null,
            "megatron_core": "megatron.core",
            "modules_to_save": null,
            "peft_type": "LORA",
            "r": self.r,
            "rank_pattern": {},
            "revision": null,
            "target_modules": targets,
            "task_type": if causal { "CAUSAL_LM" } else { "SEQ_2_SEQ_LM" },
            "use_dora": false,
            "use_rslora": self.use_rslora,
        });
        serde_json::to_string_pretty(&v).unwrap_or_default()
    }

    /// Parse an `adapter_config.json` (`path` for errors).
    pub fn from_peft_json(text: &str, path: &str) -> Result<Self> {
        let v: Value = serde_json::from_str(text)
            .map_err(|e| Error::config(path, format!("invalid JSON: {e}")))?;
        let err = |m: String| Error::config(path, m);
        let peft_type = v.get("peft_type").and_then(Value::as_str).unwrap_or("");
        if peft_type != "LORA" {
            return Err(err(format!(
                "peft_type is `{peft_type}`; only LORA adapters are supported"
            )));
        }
        let r = v
            .get("r")
            .and_then(Value::as_u64)
            .ok_or_else(|| err("missing or invalid `r`".into()))? as usize;
        let alpha = v
            .get("lora_alpha")
            .and_then(Value::as_f64)
            .ok_or_else(|| err("missing or invalid `lora_alpha`".into()))?;
        let dropout = v.get("lora_dropout").and_then(Value::as_f64).unwrap_or(0.0) as f32;
        let use_rslora = v
            .get("use_rslora")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        let targets = match v.get("target_modules") {
            Some(Value::String(s)) if s == "all-linear" => Targets::AllLinear,
            Some(Value::String(s)) => {
                return Err(err(format!(
                    "target_modules is the regular expression `{s}`; dsum supports a list of \
                     module names or \"all-linear\""
                )))
            }
            Some(Value::Array(a)) => Targets::Names(
                a.iter()
                    .map(|x| {
                        x.as_str()
                            .map(String::from)
                            .ok_or_else(|| err("target_modules must be strings".into()))
                    })
                    .collect::<Result<_>>()?,
            ),
            _ => return Err(err("missing `target_modules`".into())),
        };
        // Settings that change the math: refuse rather than load a different model.
        let unsupported = |key: &str, ok: &dyn Fn(&Value) -> bool| -> Result<()> {
            match v.get(key) {
                Some(x) if !ok(x) => Err(err(format!("`{key}` = {x} is not supported by dsum"))),
                _ => Ok(()),
            }
        };
        let empty = |x: &Value| {
            x.is_null()
                || x.as_object().is_some_and(|o| o.is_empty())
                || x.as_array().is_some_and(|a| a.is_empty())
        };
        unsupported("bias", &|x| x == "none")?;
        unsupported("use_dora", &|x| x == false)?;
        unsupported("fan_in_fan_out", &|x| x == false)?;
        unsupported("lora_bias", &|x| x == false)?;
        unsupported("modules_to_save", &empty)?;
        unsupported("rank_pattern", &empty)?;
        unsupported("alpha_pattern", &empty)?;
        unsupported("layers_to_transform", &Value::is_null)?;
        unsupported("layer_replication", &Value::is_null)?;
        unsupported("trainable_token_indices", &Value::is_null)?;
        let c = LoraConfig {
            r,
            alpha,
            dropout,
            targets,
            use_rslora,
        };
        c.check(path)?;
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scaling_plain_and_rslora() {
        let mut c = LoraConfig::default();
        assert_eq!(c.scaling(), 2.0);
        c.use_rslora = true;
        assert_eq!(c.scaling(), 8.0);
    }

    #[test]
    fn json_round_trip_and_refusals() {
        let c = LoraConfig {
            r: 4,
            alpha: 8.0,
            dropout: 0.05,
            targets: Targets::Names(vec!["q_proj".into(), "v_proj".into()]),
            use_rslora: false,
        };
        let text = c.to_peft_json("base", true, &[]);
        let back = LoraConfig::from_peft_json(&text, "a.json").unwrap();
        assert_eq!(back, c);
        let all = LoraConfig {
            targets: Targets::AllLinear,
            ..c.clone()
        };
        let text = all.to_peft_json("base", false, &["model.layers.0.fc1".into()]);
        assert!(text.contains("SEQ_2_SEQ_LM") && text.contains("model.layers.0.fc1"));

        let dora = text.replace("\"use_dora\": false", "\"use_dora\": true");
        let e = LoraConfig::from_peft_json(&dora, "x/adapter_config.json").unwrap_err();
        assert!(
            e.to_string().contains("x/adapter_config.json") && e.to_string().contains("use_dora")
        );
        let ia3 = text.replace("\"LORA\"", "\"IA3\"");
        assert!(LoraConfig::from_peft_json(&ia3, "f")
            .unwrap_err()
            .to_string()
            .contains("IA3"));
        let regex = text.replace("[\n    \"model.layers.0.fc1\"\n  ]", "\".*proj\"");
        assert!(LoraConfig::from_peft_json(&regex, "f")
            .unwrap_err()
            .to_string()
            .contains("regular expression"));
        assert!(LoraConfig::from_peft_json("{", "f").is_err());
    }

    #[test]
    fn targets_parse() {
        assert_eq!(Targets::parse("all-linear"), Targets::AllLinear);
        assert_eq!(
            Targets::parse("q_proj, v_proj"),
            Targets::Names(vec!["q_proj".into(), "v_proj".into()])
        );
    }
}
