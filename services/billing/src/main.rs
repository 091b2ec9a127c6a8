use std::process::ExitCode;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    promptops_platform::runtime::main(
        promptops_billing::SERVICE,
        promptops_billing::config_from_env,
        promptops_billing::run,
    )
}
