use std::process::ExitCode;

fn main() -> ExitCode {
    promptops_platform::runtime::main(
        promptops_prompts::SERVICE,
        promptops_prompts::Config::from_env,
        promptops_prompts::run,
    )
}
