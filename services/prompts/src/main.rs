use std::process::ExitCode;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    promptops_platform::runtime::main(
        promptops_prompts::SERVICE,
        promptops_prompts::config_from_env,
        promptops_prompts::run,
    )
}
