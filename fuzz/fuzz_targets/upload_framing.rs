#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ums_fuzz::upload_framing::fuzz(data));
