// glibc loads `libnss_<service>.so.2`; the soname says so too, as Debian's own modules do.
fn main() {
    println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,libnss_unbit.so.2");
}
