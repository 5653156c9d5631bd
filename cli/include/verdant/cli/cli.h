// verdant/cli/cli.h
//
// The `verdant` command line: server, client, demo (and the commands later
// issues add). Each subcommand parses its flags (CLI11) and, where a file is
// given, a TOML config (toml++), validates everything once, and runs.
//   int main(int argc, char** argv) { return verdant::RunCli(argc, argv); }
// Thread-safety: call once, from main.
#pragma once

namespace verdant {

// Returns the process exit code: 0 on success, 1 on a run failure, 2 on a
// usage/config error, 130 when interrupted before finishing.
int RunCli(int argc, char** argv);

}  // namespace verdant
