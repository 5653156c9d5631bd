// Internal: the `verdant simulate` and `verdant fleet generate` subcommands
// (docs/simulator.md). Not a public header.
#pragma once

namespace CLI {
class App;
}

namespace verdant::cli {

// Registers the subcommands on `app`. Each runs from its CLI11 callback and
// ends the parse with CLI::Success (exit 0) or CLI::RuntimeError(code).
void AddSimulateCommands(CLI::App& app);

}  // namespace verdant::cli
