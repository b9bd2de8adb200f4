package io.blkstack.cli;

import io.blkstack.bench.StackBench;
import java.util.List;
import java.util.concurrent.Callable;
import me.tongfei.progressbar.ProgressBar;

import picocli.CommandLine.Command;
import picocli.CommandLine.Model.CommandSpec;
import picocli.CommandLine.Option;
import picocli.CommandLine.ParameterException;
import picocli.CommandLine.Spec;

/**
 * {@code blkstack bench stack}: measures I/O through stacks of 1, 2, 4, ... layers over a null
 * or memory bottom device, to show what each layer of the block layer costs.
 *
 */
@Command(
        name = "stack",
        mixinStandardHelpOptions = true,
        versionProvider = BlkstackVersion.class,
        description = "Measure bios per second through stacks of pass-through layers.")
final class BenchStackCommand implements Callable<Integer> {

    /** The bottom device under the stack. */
    enum Device { NULL, MEMORY }

    /** Bounds on the options, so a typo cannot ask for a week-long run. */
    static final int LAYER_COUNT_MAX = 64;
    static final int SECONDS_MAX = 3600;
    static final long BLOCK_SIZE_MIN = 512;
    static final long BLOCK_SIZE_MAX = 1 << 20;

    @Spec
    private CommandSpec spec;

    @Option(names = "--device", paramLabel = "null|memory", defaultValue = "null",
            description = "Bottom device: null or memory (default: ${DEFAULT-VALUE}).")
    Device device;

    @Option(names = "--layers", paramLabel = "N", split = ",", defaultValue = "1,2,4",
            description = "Stack depths to measure, one run each (default: ${DEFAULT-VALUE}).")
    List<Integer> layerCounts;

    @Option(names = "--seconds", paramLabel = "N", defaultValue = "3",
            description = "Duration of each run in seconds (default: ${DEFAULT-VALUE}).")
    int seconds;

    @Option(names = "--block-size", paramLabel = "SIZE", defaultValue = "4KiB",
            converter = SizeConverter.class,
            description = "I/O size, a multiple of 512 bytes (default: ${DEFAULT-VALUE}).")
    long blockSizeBytes;

    @Option(names = "--memory", paramLabel = "SIZE", defaultValue = "64MiB",
            converter = SizeConverter.class,
            description = "Page arena for the data path (default: ${DEFAULT-VALUE}).")
    long memoryBytes;

    @Option(names = "--no-progress", description = "No progress bar (it is shown only on a terminal anyway).")
    boolean noProgress;

    @Override
    public Integer call() {
        checkOptions();
        StackBench bench = new StackBench(StackBench.Bottom.valueOf(device.name()), memoryBytes, (int) blockSizeBytes,
                seconds * 1_000_000_000L, 2, 16);
        ProgressBar bar = ProgressBars.open("bench stack", layerCounts.size() + 1L, noProgress);
        try {
            bench.runAll(layerCounts, spec.commandLine().getOut(), label -> ProgressBars.step(bar, label));
        } finally {
            ProgressBars.close(bar);
        }
        return ExitCodes.SUCCESS;
    }

    /** Rejects option values out of range as usage errors that name the value. */
    private void checkOptions() {
        for (int layerCount : layerCounts) {
            if (layerCount < 1 || layerCount > LAYER_COUNT_MAX) {
                throw usage("--layers: '" + layerCount + "' is not a stack depth between 1 and "
                        + LAYER_COUNT_MAX);
            }
        }
        if (seconds < 1 || seconds > SECONDS_MAX) {
            throw usage("--seconds: '" + seconds + "' is not between 1 and " + SECONDS_MAX);
        }
        if (blockSizeBytes < BLOCK_SIZE_MIN || blockSizeBytes > BLOCK_SIZE_MAX) {
            throw usage("--block-size: '" + blockSizeBytes + "' bytes is not between "
                    + BLOCK_SIZE_MIN + " and " + BLOCK_SIZE_MAX);
        }
        if (blockSizeBytes % 512 != 0) {
            throw usage("--block-size: '" + blockSizeBytes + "' bytes is not a multiple of 512");
        }
        if (memoryBytes < blockSizeBytes) {
            throw usage("--memory: '" + memoryBytes + "' bytes is smaller than one block of "
                    + blockSizeBytes + " bytes");
        }
    }

    private ParameterException usage(String message) {
        return new ParameterException(spec.commandLine(), message);
    }
}
