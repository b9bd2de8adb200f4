package io.blkstack.cli;

import java.nio.file.Path;
import java.util.concurrent.Callable;

import picocli.CommandLine.Command;
import picocli.CommandLine.Model.CommandSpec;
import picocli.CommandLine.Option;
import picocli.CommandLine.Spec;

/**
 * {@code blkstack serve}: exports a stack of devices over NBD. With no configuration it serves
 * the embedded default stack over sparse files in {@code ./blkstack-data/}.
 *
 * <p>The NBD server does not exist yet (issue 5); until it does, this command says so and exits
 * with {@link ExitCodes#RUNTIME}.
 */
@Command(
        name = "serve",
        mixinStandardHelpOptions = true,
        versionProvider = BlkstackVersion.class,
        description = "Serve a stack of block devices over NBD (not available yet).")
final class ServeCommand implements Callable<Integer> {

    @Spec
    private CommandSpec spec;

    @Option(names = "--config", paramLabel = "FILE",
            description = "YAML configuration; without it, the embedded default stack over sparse"
                    + " files in ./blkstack-data/.")
    Path configFile;

    @Option(names = "--memory", paramLabel = "SIZE", defaultValue = "64MiB",
            converter = SizeConverter.class,
            description = "Page arena for the data path, such as 64MiB or 1GiB"
                    + " (default: ${DEFAULT-VALUE}).")
    long memoryBytes;

    @Option(names = "--listen", paramLabel = "ADDR:PORT", defaultValue = "127.0.0.1:10809",
            description = "Address to listen on (default: ${DEFAULT-VALUE}).")
    String listenAddress;

    @Override
    public Integer call() {
        spec.commandLine().getErr().println(
                "blkstack serve: the NBD server is not available yet (issue 5)");
        spec.commandLine().getErr().flush();
        return ExitCodes.RUNTIME;
    }
}
