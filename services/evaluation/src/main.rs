use std::process::ExitCode;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    promptops_platform::runtime::main(
        promptops_evaluation::SERVICE,
        promptops_evaluation::config_from_env,
        promptops_evaluation::run,
    )
}
