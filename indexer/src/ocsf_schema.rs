//! A validator of OCSF events against the official schema's own files (the
//! ocsf/ocsf-schema repository at a release tag, vendored under
//! `indexer/ocsf-schema-1.8.0/`), so the findings Outlier publishes are
//! checked against OCSF itself, not against our reading of it.
//!
//! It compiles a class the way the schema server does, for what a validator
//! needs: `extends` chains of classes and objects, `$include`d profiles,
//! each attribute's dictionary entry overridden by the class or object, and
//! the dictionary's types down to their base type. It then checks an event:
//! every attribute is defined for its class or object (`unmapped` excepted),
//! required attributes are present, `at_least_one` / `just_one` constraints
//! hold, values have their type (arrays where `is_array`), enum values are
//! defined, objects recursively.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

/// A loaded schema.
pub struct Schema {
    dir: PathBuf,
    pub version: String,
    dictionary: Map<String, Value>,
    types: Map<String, Value>,
    objects: HashMap<String, Value>,
    classes: HashMap<String, Value>,
    /// Category name → uid (categories.json).
    categories: HashMap<String, u64>,
}

/// A class or object with its attributes merged.
struct Compiled {
    attributes: Map<String, Value>,
    constraints: Map<String, Value>,
}

fn read_json(path: &Path) -> Result<Value, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))
}

fn json_files(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), String> {
    for e in std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))? {
        let p = e.map_err(|e| e.to_string())?.path();
        if p.is_dir() {
            json_files(&p, out)?;
        } else if p.extension().is_some_and(|x| x == "json") {
            out.push(p);
        }
    }
    Ok(())
}

/// Merges `over` into `base`, attribute by attribute, field by field.
fn merge_attributes(base: &mut Map<String, Value>, over: &Map<String, Value>) {
    for (k, v) in over {
        match (base.get_mut(k), v) {
            (Some(Value::Object(b)), Value::Object(o)) => {
                for (f, x) in o {
                    b.insert(f.clone(), x.clone());
                }
            }
            _ => {
                base.insert(k.clone(), v.clone());
            }
        }
    }
}

impl Schema {
    /// Loads the schema under `dir` (dictionary.json, events/, objects/,
    /// profiles/, version.json).
    pub fn load(dir: &Path) -> Result<Self, String> {
        let version = read_json(&dir.join("version.json"))?["version"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let dict = read_json(&dir.join("dictionary.json"))?;
        let dictionary = dict["attributes"].as_object().cloned().unwrap_or_default();
        let types = dict["types"]["attributes"]
            .as_object()
            .cloned()
            .unwrap_or_default();
        let index = |sub: &str| -> Result<HashMap<String, Value>, String> {
            let mut files = Vec::new();
            json_files(&dir.join(sub), &mut files)?;
            let mut out = HashMap::new();
            for f in files {
                let v = read_json(&f)?;
                if let Some(name) = v["name"].as_str() {
                    out.insert(name.to_string(), v);
                }
            }
            Ok(out)
        };
        let categories = read_json(&dir.join("categories.json"))?["attributes"]
            .as_object()
            .map(|m| {
                m.iter()
                    .filter_map(|(k, v)| v["uid"].as_u64().map(|u| (k.clone(), u)))
                    .collect()
            })
            .unwrap_or_default();
        Ok(Self {
            categories,
            objects: index("objects")?,
            classes: index("events")?,
            dir: dir.to_path_buf(),
            version,
            dictionary,
            types,
        })
    }

    /// The attributes of a definition, with its `$include`s merged in.
    fn own_attributes(&self, def: &Value) -> Result<Map<String, Value>, String> {
        let mut attrs = def["attributes"].as_object().cloned().unwrap_or_default();
        let includes: Vec<String> = match attrs.remove("$include") {
            Some(Value::String(s)) => vec![s],
            Some(Value::Array(a)) => a
                .iter()
                .filter_map(|x| x.as_str().map(String::from))
                .collect(),
            _ => Vec::new(),
        };
        for inc in includes {
            let included = read_json(&self.dir.join(&inc))?;
            let mut inner = self.own_attributes(&included)?;
            // A profile's attributes belong to it: allowed and required
            // only in events that declare the profile.
            if inc.starts_with("profiles/")
                && let Some(profile) = included["name"].as_str()
            {
                for spec in inner.values_mut() {
                    if let Some(o) = spec.as_object_mut() {
                        o.entry("profile").or_insert_with(|| Value::from(profile));
                    }
                }
            }
            let mut merged = inner;
            merge_attributes(&mut merged, &attrs);
            attrs = merged;
        }
        Ok(attrs)
    }

    fn compile(&self, def: &Value, lookup: &HashMap<String, Value>) -> Result<Compiled, String> {
        let mut attributes = Map::new();
        let mut constraints = Map::new();
        if let Some(parent) = def["extends"].as_str()
            && parent != "object"
        {
            let p = lookup
                .get(parent)
                .ok_or_else(|| format!("`{parent}` (extended) is not in the schema"))?;
            let c = self.compile(p, lookup)?;
            attributes = c.attributes;
            constraints = c.constraints;
        }
        merge_attributes(&mut attributes, &self.own_attributes(def)?);
        if let Some(c) = def["constraints"].as_object() {
            constraints = c.clone();
        }
        Ok(Compiled {
            attributes,
            constraints,
        })
    }

    /// The base type (`string_t`, `integer_t`, `long_t`, `float_t`,
    /// `boolean_t`, `json_t`) of a dictionary type.
    fn base_type<'a>(&'a self, mut t: &'a str) -> &'a str {
        for _ in 0..8 {
            match self.types.get(t).and_then(|d| d["type"].as_str()) {
                Some(parent) if parent != t => t = parent,
                _ => break,
            }
        }
        t
    }

    /// Checks `event` against class `class` (its `name`, e.g.
    /// `detection_finding`); every problem found, with its JSON path.
    pub fn validate(&self, class: &str, event: &Value) -> Vec<String> {
        let mut errors = Vec::new();
        let Some(def) = self.classes.get(class) else {
            return vec![format!("class `{class}` is not in the schema")];
        };
        // The ids the schema server computes: category uid from
        // categories.json, class_uid = category × 1000 + the class's uid,
        // type_uid = class_uid × 100 + activity_id.
        let mut category = def["category"].as_str();
        let mut parent = def["extends"].as_str();
        while category.is_none() {
            let Some(p) = parent.and_then(|p| self.classes.get(p)) else {
                break;
            };
            category = p["category"].as_str();
            parent = p["extends"].as_str();
        }
        let category_uid = category.and_then(|c| self.categories.get(c)).copied();
        match (category_uid, def["uid"].as_u64()) {
            (Some(cat), Some(uid)) => {
                let class_uid = cat * 1000 + uid;
                if event["category_uid"].as_u64() != Some(cat) {
                    errors.push(format!("$.category_uid: {cat} expected"));
                }
                if event["class_uid"].as_u64() != Some(class_uid) {
                    errors.push(format!("$.class_uid: {class_uid} expected"));
                }
                let type_uid = event["activity_id"].as_u64().map(|a| class_uid * 100 + a);
                if event["type_uid"].as_u64() != type_uid {
                    errors.push(format!("$.type_uid: {type_uid:?} expected"));
                }
            }
            _ => errors.push(format!("class `{class}`: no category or uid in the schema")),
        }
        let profiles: Vec<String> = event["metadata"]["profiles"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|p| p.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default();
        match self.compile(def, &self.classes) {
            Ok(c) => self.check_object(&c, event, "$", &profiles, &mut errors),
            Err(e) => errors.push(e),
        }
        errors
    }

    fn check_object(
        &self,
        c: &Compiled,
        v: &Value,
        path: &str,
        profiles: &[String],
        errors: &mut Vec<String>,
    ) {
        let Some(obj) = v.as_object() else {
            errors.push(format!("{path}: an object expected"));
            return;
        };
        let applies = |spec: &Value| match spec["profile"].as_str() {
            Some(p) => profiles.iter().any(|x| x == p),
            None => true,
        };
        for (name, spec) in &c.attributes {
            if spec["requirement"] == "required" && applies(spec) && !obj.contains_key(name) {
                errors.push(format!("{path}.{name}: required"));
            }
        }
        if let Some(set) = c.constraints.get("at_least_one").and_then(Value::as_array) {
            let n = set
                .iter()
                .filter(|k| k.as_str().is_some_and(|k| obj.contains_key(k)))
                .count();
            if !set.is_empty() && n == 0 {
                errors.push(format!("{path}: at least one of {set:?} required"));
            }
        }
        if let Some(set) = c.constraints.get("just_one").and_then(Value::as_array) {
            let n = set
                .iter()
                .filter(|k| k.as_str().is_some_and(|k| obj.contains_key(k)))
                .count();
            if n != 1 {
                errors.push(format!("{path}: exactly one of {set:?} required"));
            }
        }
        for (name, value) in obj {
            let here = format!("{path}.{name}");
            let Some(local) = c.attributes.get(name) else {
                errors.push(format!("{here}: not an attribute of this class or object"));
                continue;
            };
            if !applies(local) {
                errors.push(format!(
                    "{here}: belongs to profile `{}`, not in metadata.profiles",
                    local["profile"].as_str().unwrap_or_default()
                ));
                continue;
            }
            // Computed by the class (checked in `validate`).
            let computed =
                path == "$" && matches!(name.as_str(), "class_uid" | "category_uid" | "type_uid");
            let Some(dict) = self.dictionary.get(name) else {
                errors.push(format!("{here}: not in the dictionary"));
                continue;
            };
            let mut spec = dict.as_object().cloned().unwrap_or_default();
            let mut enums = dict["enum"].as_object().cloned().unwrap_or_default();
            if let Some(l) = local.as_object() {
                for (f, x) in l {
                    spec.insert(f.clone(), x.clone());
                }
                if let Some(e) = l.get("enum").and_then(Value::as_object) {
                    enums.extend(e.clone());
                }
            }
            if computed {
                enums.clear();
            }
            let ty = spec
                .get("type")
                .and_then(Value::as_str)
                .unwrap_or("json_t")
                .to_string();
            let is_array = spec
                .get("is_array")
                .and_then(Value::as_bool)
                .unwrap_or(false);
            if is_array {
                match value.as_array() {
                    Some(items) => {
                        for (i, item) in items.iter().enumerate() {
                            self.check_value(
                                &ty,
                                &enums,
                                item,
                                &format!("{here}[{i}]"),
                                profiles,
                                errors,
                            );
                        }
                    }
                    None => errors.push(format!("{here}: an array expected")),
                }
            } else {
                self.check_value(&ty, &enums, value, &here, profiles, errors);
            }
        }
    }

    fn check_value(
        &self,
        ty: &str,
        enums: &Map<String, Value>,
        v: &Value,
        path: &str,
        profiles: &[String],
        errors: &mut Vec<String>,
    ) {
        if ty == "object" {
            if !v.is_object() {
                errors.push(format!("{path}: an object expected"));
            }
            return;
        }
        if let Some(def) = self.objects.get(ty) {
            match self.compile(def, &self.objects) {
                Ok(c) => self.check_object(&c, v, path, profiles, errors),
                Err(e) => errors.push(format!("{path}: {e}")),
            }
            return;
        }
        let ok = match self.base_type(ty) {
            "string_t" => v.is_string(),
            "integer_t" | "long_t" => v.is_i64() || v.is_u64(),
            "float_t" => v.is_number(),
            "boolean_t" => v.is_boolean(),
            "json_t" => true,
            other => {
                errors.push(format!("{path}: unknown type `{other}`"));
                return;
            }
        };
        if !ok {
            errors.push(format!("{path}: {v} is not a {ty}"));
            return;
        }
        if !enums.is_empty() {
            let key = match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            if !enums.contains_key(&key) {
                errors.push(format!("{path}: {v} is not one of the enum's values"));
            }
        }
    }
}

/// The vendored OCSF schema this build publishes and tests against.
pub fn vendored_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("ocsf-schema-1.8.0")
}
