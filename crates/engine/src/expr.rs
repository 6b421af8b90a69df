//! KFP's CEL expressions: trigger conditions (`dsl.If`/`Elif`/`Else`) and
//! parameter selectors (`parseJson(string_value)["a"]` for loop-item fields),
//! evaluated with the `cel` crate plus the `parseJson` function KFP adds.

use std::sync::Arc;

use cel::{Context, ExecutionError, Program, Value as CelValue};
use serde_json::{Map, Value};

/// KFP hands CEL every number as a double (protobuf `Value`); do the same, so
/// `int(x) > 5` and `x > double(5)` behave as on a KFP cluster.
fn numbers_as_doubles(v: &Value) -> Value {
    match v {
        Value::Number(n) => n.as_f64().map(Value::from).unwrap_or(Value::Null),
        Value::Array(a) => Value::Array(a.iter().map(numbers_as_doubles).collect()),
        Value::Object(o) => Value::Object(
            o.iter()
                .map(|(k, v)| (k.clone(), numbers_as_doubles(v)))
                .collect(),
        ),
        other => other.clone(),
    }
}

fn parse_json(s: Arc<String>) -> Result<CelValue, ExecutionError> {
    let v: Value =
        serde_json::from_str(&s).map_err(|e| ExecutionError::function_error("parseJson", e))?;
    cel::to_value(numbers_as_doubles(&v))
        .map_err(|e| ExecutionError::function_error("parseJson", e))
}

fn context() -> Result<Context<'static, 'static>, String> {
    let mut ctx = Context::default();
    ctx.add_function("parseJson", parse_json)
        .map_err(|e| e.to_string())?;
    Ok(ctx)
}

/// Evaluates a trigger condition against the task's resolved input parameters.
pub fn eval_condition(expr: &str, params: &Map<String, Value>) -> Result<bool, String> {
    let program =
        Program::compile(expr).map_err(|e| format!("cannot parse condition `{expr}`: {e}"))?;
    let mut ctx = context()?;
    let inputs = serde_json::json!({ "parameter_values": numbers_as_doubles(&Value::Object(params.clone())) });
    ctx.add_variable("inputs", cel::to_value(inputs).map_err(|e| e.to_string())?)
        .map_err(|e| e.to_string())?;
    match program.execute(&ctx) {
        Ok(CelValue::Bool(b)) => Ok(b),
        Ok(other) => Err(format!("condition `{expr}` gave {other:?}, not a boolean")),
        Err(e) => Err(format!("condition `{expr}` failed: {e}")),
    }
}

/// Applies a `parameterExpressionSelector` to one input value.
pub fn eval_selector(expr: &str, value: &Value) -> Result<Value, String> {
    let program =
        Program::compile(expr).map_err(|e| format!("cannot parse selector `{expr}`: {e}"))?;
    let mut ctx = context()?;
    let text = match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let bind = |ctx: &mut Context<'static, 'static>, name: &str, v: Value| -> Result<(), String> {
        ctx.add_variable(name, cel::to_value(v).map_err(|e| e.to_string())?)
            .map_err(|e| e.to_string())
    };
    bind(&mut ctx, "string_value", Value::String(text))?;
    let native = numbers_as_doubles(value);
    match &native {
        Value::Number(_) => bind(&mut ctx, "number_value", native.clone())?,
        Value::Bool(_) => bind(&mut ctx, "bool_value", native.clone())?,
        Value::Array(_) => bind(&mut ctx, "list_value", native.clone())?,
        Value::Object(_) => bind(&mut ctx, "struct_value", native.clone())?,
        _ => {}
    }
    let out = program
        .execute(&ctx)
        .map_err(|e| format!("selector `{expr}` failed: {e}"))?;
    out.json()
        .map_err(|e| format!("selector `{expr}` gave a value that is not JSON: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn params(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap_or_default()
    }

    #[test]
    fn kfp_conditions() {
        let p = params(
            json!({"pipelinechannel--coin": "heads", "pipelinechannel--n": 7, "pipelinechannel--f": true}),
        );
        assert!(eval_condition(
            "inputs.parameter_values['pipelinechannel--coin'] == 'heads'",
            &p
        )
        .unwrap());
        assert!(
            eval_condition("int(inputs.parameter_values['pipelinechannel--n']) > 5", &p).unwrap()
        );
        assert!(eval_condition(
            "inputs.parameter_values['pipelinechannel--n'] > double(5)",
            &p
        )
        .unwrap());
        assert!(!eval_condition(
            "!(inputs.parameter_values['pipelinechannel--coin'] == 'heads') && inputs.parameter_values['pipelinechannel--n'] > double(5)",
            &p
        )
        .unwrap());
        assert!(
            eval_condition("inputs.parameter_values['pipelinechannel--f'] == true", &p).unwrap()
        );
        assert!(eval_condition("inputs.parameter_values['missing'] == 1", &p).is_err());
    }

    #[test]
    fn selectors() {
        assert_eq!(
            eval_selector("parseJson(string_value)[\"a\"]", &json!({"a": 1, "b": "x"})).unwrap(),
            json!(1.0)
        );
        assert_eq!(
            eval_selector(
                "parseJson(string_value)[\"b\"]",
                &json!("{\"a\": 1, \"b\": \"x\"}")
            )
            .unwrap(),
            json!("x")
        );
    }
}
