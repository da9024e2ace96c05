#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| cnpg_fuzz::quantity_lsn(data));
