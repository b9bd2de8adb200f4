package io.blkstack.cli;

import io.blkstack.bench.PeersChart;
import java.io.IOException;
import java.nio.file.Path;
import java.util.concurrent.Callable;
import picocli.CommandLine.Command;
import picocli.CommandLine.Model.CommandSpec;
import picocli.CommandLine.Option;
import picocli.CommandLine.Parameters;
import picocli.CommandLine.Spec;

/**
 * {@code blkstack bench chart}: draws the table of {@code bench/nbd-peers.sh} (medians per job and
 * server) as a PNG bar chart with XChart ({@link PeersChart}).
 */
@Command(
        name = "chart",
        mixinStandardHelpOptions = true,
        versionProvider = BlkstackVersion.class,
        description = "Draw a benchmark's medians (lines of: job, server, median, min, max MiB/s; tab-separated)"
                + " as a PNG bar chart.")
final class BenchChartCommand implements Callable<Integer> {

    @Spec
    private CommandSpec spec;

    @Parameters(index = "0", paramLabel = "TSV", description = "The figures, one job and server per line.")
    Path input;

    @Parameters(index = "1", paramLabel = "PNG", description = "The chart to write.")
    Path output;

    @Option(names = "--title", paramLabel = "TEXT", defaultValue = "NBD servers, same file, same fio jobs",
            description = "The chart's title (default: ${DEFAULT-VALUE}).")
    String title;

    @Option(names = "--relative-to", paramLabel = "SERVER",
            description = "Draw each job's bars as fractions of this server's median (default: MiB/s).")
    String reference;

    @Option(names = "--width", paramLabel = "PIXELS", defaultValue = "1200", description = "Width (default: ${DEFAULT-VALUE}).")
    int width;

    @Option(names = "--height", paramLabel = "PIXELS", defaultValue = "600", description = "Height (default: ${DEFAULT-VALUE}).")
    int height;

    @Override
    public Integer call() {
        try {
            PeersChart.write(PeersChart.read(input), reference, title, width, height, output);
        } catch (IllegalArgumentException e) {
            spec.commandLine().getErr().println("bench chart: " + e.getMessage());
            return ExitCodes.USAGE;
        } catch (IOException e) {
            spec.commandLine().getErr().println("bench chart: " + e);
            return ExitCodes.RUNTIME;
        }
        spec.commandLine().getOut().println("bench chart: wrote " + output);
        return ExitCodes.SUCCESS;
    }
}
