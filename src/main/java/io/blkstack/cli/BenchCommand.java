package io.blkstack.cli;

import picocli.CommandLine.Command;

/**
 * {@code blkstack bench}: groups the benchmarks. It does nothing itself; run without a
 * subcommand, picocli reports the missing subcommand as a usage error.
 */
@Command(
        name = "bench",
        mixinStandardHelpOptions = true,
        versionProvider = BlkstackVersion.class,
        description = "Run a benchmark. Benchmarks measure; they never assert timings.",
        subcommands = {BenchStackCommand.class, BenchChartCommand.class})
final class BenchCommand {
}
