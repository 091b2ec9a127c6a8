use std::process::ExitCode;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    promptops_platform::runtime::main(
        promptops_execution::SERVICE,
        promptops_execution::config_from_env,
        promptops_execution::run,
    )
}
