//! What the generated OpenAPI document cannot say by itself, added once after generation: the
//! security schemes and which operations need a credential, the error shape of each route
//! family (DESIGN §7), and the error answers every operation of a kind can give — from the
//! extractors (bad JSON 400, wrong content type 415, body that does not fit 422, bad query 422),
//! the layers (body limit 413, timeout 408) and authentication (401, 403) — so a client
//! generated from the document knows every status code a route answers.

use serde_json::{Map, Value, json};

use crate::error::ErrorFamily;

mod rules;

/// Operations anyone may call: `(method, path)`.
const PUBLIC: &[(&str, &str)] = &[
    ("get", "/health"),
    ("get", "/ready"),
    ("get", "/metrics"),
    ("post", "/api/v1/auth/register"),
    ("post", "/api/v1/auth/login"),
    ("post", "/api/v1/auth/refresh"),
    ("post", "/auth/github"),
];

/// The shape of git memory's user and session ids (`services::git_memory::layout::is_valid_id`): 1 to
/// 64 ASCII letters, digits, `-`, `_` or `.`, not starting with `.`.
const ID_PATTERN: &str = "^[A-Za-z0-9_-][A-Za-z0-9._-]{0,63}$";
/// Properties and path parameters that are git memory ids wherever they appear.
const ID_NAMES: &[&str] = &["user_id", "session_id"];

/// The error body schema of a route family, by component name.
fn family_schema(path: &str) -> &'static str {
    match ErrorFamily::for_path(path) {
        ErrorFamily::AiBrain => "AiBrainError",
        ErrorFamily::FastApi => "FastApiError",
        ErrorFamily::Engram => "EngramError",
        ErrorFamily::MemoryBreak => "MemoryBreakError",
    }
}

/// Completes `document` (the JSON of the derived `ApiDoc`).
pub fn finish(document: &mut Value) {
    add_components(document);
    if let Some(schemas) = document.pointer_mut("/components/schemas").and_then(Value::as_object_mut) {
        for schema in schemas.values_mut() {
            constrain_ids(schema);
        }
        for (component, property, rule) in rules::property_rules() {
            let target = schemas.get_mut(component).and_then(|schema| find_property(schema, property));
            let target =
                target.unwrap_or_else(|| panic!("no property {component}.{property} to give a rule"));
            merge_rule(target, rule);
        }
    }
    rules::fix_components(document);
    let user_bodies = components_with(document, "user_id");
    let Some(paths) = document.get_mut("paths").and_then(Value::as_object_mut) else { return };
    for (path, item) in paths.iter_mut() {
        let Some(item) = item.as_object_mut() else { continue };
        for (method, operation) in item.iter_mut() {
            let Some(operation) = operation.as_object_mut() else { continue };
            let public = PUBLIC.contains(&(method.as_str(), path.as_str()));
            finish_operation(path, public, &user_bodies, operation);
            apply_parameter_rules(method, path, operation);
        }
    }
}

/// Gives the id properties of an object schema the id pattern.
fn constrain_ids(schema: &mut Value) {
    let Some(properties) = schema.get_mut("properties").and_then(Value::as_object_mut) else { return };
    for (name, property) in properties.iter_mut() {
        if ID_NAMES.contains(&name.as_str()) {
            property["pattern"] = json!(ID_PATTERN);
        }
    }
}

/// A query parameter is present or absent: "nullable" means nothing on the wire, so the
/// document says only its type (absent is `required: false`). Git memory's id parameters get
/// the id pattern.
fn tighten_parameters(operation: &mut Map<String, Value>) {
    let Some(parameters) = operation.get_mut("parameters").and_then(Value::as_array_mut) else { return };
    for parameter in parameters {
        let in_query = parameter["in"] == "query";
        let is_id =
            parameter["in"] == "path" && parameter["name"].as_str().is_some_and(|n| ID_NAMES.contains(&n));
        let Some(schema) = parameter.get_mut("schema").and_then(Value::as_object_mut) else { continue };
        if in_query && let Some(types) = schema.get("type").and_then(Value::as_array) {
            let types: Vec<Value> = types.iter().filter(|t| *t != "null").cloned().collect();
            schema
                .insert("type".into(), if types.len() == 1 { types[0].clone() } else { Value::Array(types) });
        }
        if is_id {
            schema.insert("pattern".into(), json!(ID_PATTERN));
        }
    }
}

/// Merges `rule` into a property's (or parameter's) schema; an `enum` of a nullable value
/// keeps `null` allowed.
fn merge_rule(target: &mut Value, rule: Value) {
    let nullable = target["type"].as_array().is_some_and(|types| types.iter().any(|t| t == "null"));
    let Value::Object(rule) = rule else { return };
    for (key, mut value) in rule {
        if key == "enum"
            && nullable
            && let Some(values) = value.as_array_mut()
        {
            values.push(Value::Null);
        }
        if key == "type" {
            target.as_object_mut().map(|t| t.remove("$ref"));
        }
        target[key] = value;
    }
}

/// A property of an object schema, or of one of the parts of an `allOf` (`#[serde(flatten)]`).
fn find_property<'a>(schema: &'a mut Value, name: &str) -> Option<&'a mut Value> {
    if schema["properties"].get(name).is_some() {
        return schema.get_mut("properties")?.get_mut(name);
    }
    let parts = schema.get_mut("allOf")?.as_array_mut()?;
    parts.iter_mut().find_map(|part| part.get_mut("properties")?.get_mut(name))
}

/// Names of the components with a property `name`.
fn components_with(document: &Value, name: &str) -> Vec<String> {
    let Some(schemas) = document.pointer("/components/schemas").and_then(Value::as_object) else {
        return vec![];
    };
    schemas.iter().filter(|(_, s)| s["properties"].get(name).is_some()).map(|(n, _)| n.clone()).collect()
}

fn apply_parameter_rules(method: &str, path: &str, operation: &mut Map<String, Value>) {
    for (rule_method, rule_path, parameter) in rules::extra_parameters() {
        if rule_method == method && rule_path == path {
            let parameters = operation.entry("parameters").or_insert_with(|| json!([]));
            parameters.as_array_mut().expect("parameters are a list").push(parameter);
        }
    }
    for (rule_method, rule_path, name, rule) in rules::parameter_rules() {
        if rule_method != method || rule_path != path {
            continue;
        }
        let parameters = operation.get_mut("parameters").and_then(Value::as_array_mut);
        let parameter = parameters.and_then(|list| list.iter_mut().find(|p| p["name"] == name));
        let parameter =
            parameter.unwrap_or_else(|| panic!("no parameter {name} of {method} {path} to give a rule"));
        merge_rule(&mut parameter["schema"], rule);
    }
}

fn finish_operation(path: &str, public: bool, user_bodies: &[String], operation: &mut Map<String, Value>) {
    tighten_parameters(operation);
    let error = json!({"$ref": format!("#/components/schemas/{}", family_schema(path))});
    let parameters = operation.get("parameters").and_then(Value::as_array).cloned().unwrap_or_default();
    let in_location = |place: &str| parameters.iter().any(|p| p["in"] == place);
    let json_body = operation
        .get("requestBody")
        .and_then(|body| body.get("content"))
        .and_then(Value::as_object)
        .is_some_and(|content| content.contains_key("application/json"));
    let any_body = operation.contains_key("requestBody");
    let body_names_a_user = operation
        .get("requestBody")
        .and_then(|body| body.pointer("/content/application~1json/schema/$ref"))
        .and_then(Value::as_str)
        .is_some_and(|r| user_bodies.iter().any(|name| r.ends_with(&format!("/{name}"))));

    let mut answers: Vec<(u16, &str)> = vec![
        (408, "The request took longer than the server's timeout"),
        (500, "An internal error (logged on the server)"),
    ];
    if !public {
        answers.push((401, "No credential, or one that is expired, revoked or unknown"));
        answers.push((403, "The credential may not do this (role or API key scopes)"));
        operation.insert("security".into(), json!([{"bearer": []}]));
    }
    if json_body {
        answers.push((400, "The body is not JSON"));
        answers.push((415, "The body is not `application/json`"));
        answers.push((422, "The body does not fit the schema (the message names the field)"));
    }
    if any_body {
        answers.push((413, "The body is larger than `ENGRAM_BODY_LIMIT_BYTES`"));
    }
    if body_names_a_user {
        answers.push((404, "No memory repository for this user (or not the caller's)"));
        answers.push((409, "The job the route waited for could not do it as things stand"));
    }
    if in_location("query") {
        answers.push((422, "A query parameter does not fit its schema"));
    }
    if in_location("path") {
        answers.push((400, "A path parameter is not valid"));
        answers.push((404, "Nothing there, or not the caller's"));
        answers.push((422, "A path parameter does not fit its schema"));
    }

    let responses = operation.entry("responses").or_insert_with(|| json!({}));
    let Some(responses) = responses.as_object_mut() else { return };
    for (status, description) in answers {
        responses.entry(status.to_string()).or_insert_with(|| json!({"description": description}));
    }
    // Every error answer carries the family's error body, whether declared on the handler
    // without a body or added above.
    for (status, response) in responses.iter_mut() {
        let is_error = status.starts_with('4') || status.starts_with('5');
        if is_error && response.get("content").is_none() {
            response["content"] = json!({"application/json": {"schema": error.clone()}});
        }
    }
}

/// The document as served: `document` with what depends on this server's configuration —
/// the job kinds it registered (the `kind` a job or schedule may name) and the vector length
/// of its embedding model, when it has one (what a client's `embedding` must hold).
pub fn for_this_server<'a>(
    document: &Value,
    kinds: impl Iterator<Item = &'a str>,
    dimensions: Option<usize>,
) -> Value {
    let mut document = document.clone();
    let mut kinds: Vec<&str> = kinds.collect();
    kinds.sort_unstable();
    for component in ["SubmitRequest", "CreateSchedule"] {
        if let Some(kind) = document.pointer_mut(&format!("/components/schemas/{component}/properties/kind"))
        {
            kind["enum"] = json!(kinds);
        }
    }
    let Some(dimensions) = dimensions.filter(|d| *d > 0) else { return document };
    for component in ["CreateBody", "UpdateBody", "ImportItemBody", "MemorySearchBody"] {
        let path = format!("/components/schemas/{component}/properties/embedding");
        if let Some(embedding) = document.pointer_mut(&path) {
            embedding["minItems"] = json!(dimensions);
            embedding["maxItems"] = json!(dimensions);
        }
    }
    document
}

fn add_components(document: &mut Value) {
    let components = document
        .as_object_mut()
        .expect("an OpenAPI document is an object")
        .entry("components")
        .or_insert_with(|| json!({}));
    components["securitySchemes"] = json!({
        "bearer": {
            "type": "http",
            "scheme": "bearer",
            "description": "An access token (JWT) from login or register, an API key (`eng_…`), or the static `API_KEY` (administrator)"
        }
    });
    let schemas = components
        .as_object_mut()
        .expect("components is an object")
        .entry("schemas")
        .or_insert_with(|| json!({}));
    let code = json!({"$ref": "#/components/schemas/ErrorCode"});
    let inner = json!({
        "type": "object",
        "required": ["code", "message"],
        "properties": {"code": code, "message": {"type": "string"}}
    });
    schemas["EngramError"] = json!({
        "type": "object",
        "description": "Engram's own routes' error",
        "required": ["error"],
        "properties": {"error": inner.clone()}
    });
    schemas["FastApiError"] = json!({
        "type": "object",
        "description": "The error of the routes of FastAPI-born originals (DiffMem, memory proxy, coordinator): FastAPI's `detail` and Engram's `error`",
        "required": ["detail", "error"],
        "properties": {"detail": {"type": "string"}, "error": inner}
    });
    schemas["MemoryBreakError"] = json!({
        "type": "object",
        "description": "Memory-Break's routes' error: the message as `error` and `detail`, the status and the request's path",
        "required": ["error", "detail", "status_code", "path"],
        "properties": {
            "error": {"type": "string"},
            "detail": {"type": "string"},
            "status_code": {"type": "integer"},
            "path": {"type": "string"}
        }
    });
    schemas["AiBrainError"] = json!({
        "type": "object",
        "description": "AIBrain's routes' error; `code` is the upper-case `ErrorCode`",
        "required": ["success", "error", "code"],
        "properties": {
            "success": {"type": "boolean", "enum": [false]},
            "error": {"type": "string"},
            "code": {"type": "string"}
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_rule_finds_its_property_and_parameter() {
        // Building the document panics on a rule whose target is gone.
        let document = crate::http::docs::openapi();
        let content = &document["components"]["schemas"]["CreateBody"]["properties"]["content"];
        assert_eq!(content["maxLength"], 10_000);
        let put = &document["paths"]["/blob/{path}"]["put"];
        assert!(put["parameters"].as_array().unwrap().iter().any(|p| p["name"] == "Content-MD5"));
    }

    #[test]
    fn the_served_document_names_this_servers_kinds_and_vector_length() {
        let served =
            for_this_server(crate::http::docs::openapi(), ["repo_sync", "noop"].into_iter(), Some(384));
        let schemas = &served["components"]["schemas"];
        assert_eq!(schemas["SubmitRequest"]["properties"]["kind"]["enum"], json!(["noop", "repo_sync"]));
        assert_eq!(schemas["CreateSchedule"]["properties"]["kind"]["enum"], json!(["noop", "repo_sync"]));
        assert_eq!(schemas["CreateBody"]["properties"]["embedding"]["maxItems"], 384);
        let without_model = for_this_server(crate::http::docs::openapi(), std::iter::empty(), None);
        assert_eq!(
            without_model["components"]["schemas"]["CreateBody"]["properties"]["embedding"]["maxItems"],
            4096
        );
    }

    #[test]
    fn the_id_pattern_is_the_id_check() {
        assert!(ID_PATTERN.ends_with(&format!("{{0,{}}}$", services::git_memory::layout::MAX_ID_LEN - 1)));
    }

    #[test]
    fn families_follow_the_path() {
        assert_eq!(family_schema("/api/v1/memories/{id}"), "AiBrainError");
        assert_eq!(family_schema("/api/v1/sync"), "AiBrainError");
        assert_eq!(family_schema("/sync"), "FastApiError");
        assert_eq!(family_schema("/sync/events"), "FastApiError");
        assert_eq!(family_schema("/memory/{user_id}/context"), "FastApiError");
        assert_eq!(family_schema("/api/v1/jobs"), "EngramError");
        assert_eq!(family_schema("/api/v1/api-keys"), "EngramError");
        assert_eq!(family_schema("/blobs/batch"), "FastApiError");
    }

    #[test]
    fn an_operation_gets_the_answers_of_its_kind() {
        let document = crate::http::docs::openapi();
        let job = &document["paths"]["/api/v1/jobs/{id}"]["get"];
        assert_eq!(job["security"], json!([{"bearer": []}]));
        assert_eq!(job["responses"]["404"]["description"], "No such job", "the handler's own word stays");
        assert_eq!(
            job["responses"]["404"]["content"]["application/json"]["schema"]["$ref"],
            "#/components/schemas/EngramError"
        );
        for status in ["401", "403", "400", "408", "500"] {
            assert!(job["responses"][status].is_object(), "{status}");
        }
        assert!(job["responses"]["415"].is_null(), "no body, no 415");
        let memories = &document["paths"]["/api/v1/memories"]["post"]["responses"];
        for status in ["400", "401", "403", "413", "415", "422"] {
            let schema = &memories[status]["content"]["application/json"]["schema"]["$ref"];
            assert_eq!(schema, "#/components/schemas/AiBrainError", "{status}");
        }
        let health = &document["paths"]["/health"]["get"];
        assert!(health["security"].is_null() && health["responses"]["401"].is_null());
    }
}
