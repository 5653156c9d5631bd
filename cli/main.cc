#include "verdant/cli/cli.h"

int main(int argc, char** argv) { return verdant::RunCli(argc, argv); }
