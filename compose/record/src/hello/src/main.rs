fn main() {
    println!("hello from the dev box");
}
