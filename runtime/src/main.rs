fn main() {
    println!("{}", serde_json::to_string_pretty(&sluice_runtime::spec::json_schema()).unwrap());
}
