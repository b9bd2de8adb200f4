package io.blkstack.cli;

import io.blkstack.block.BlockDevice;
import io.blkstack.config.ConfigException;
import io.blkstack.config.Stack;
import io.blkstack.config.StackConfig;
import io.blkstack.config.StackConfig.DeviceSpec;
import io.blkstack.config.StackConfig.FileSpec;
import io.blkstack.config.StackConfig.MemorySpec;
import io.blkstack.config.StackConfig.NullSpec;
import io.blkstack.dm.MappedDevice;
import io.blkstack.dm.StatusForm;
import io.blkstack.kernel.Kernel;
import io.blkstack.nbd.Export;
import io.blkstack.units.Durations;
import io.blkstack.units.Sizes;
import java.io.IOException;
import java.io.PrintWriter;
import java.nio.file.Path;
import java.util.concurrent.Callable;

import picocli.CommandLine.Command;
import picocli.CommandLine.Model.CommandSpec;
import picocli.CommandLine.Parameters;
import picocli.CommandLine.Spec;

/**
 * {@code blkstack table}: device-mapper table tools. {@code table check FILE} validates a YAML
 * configuration and prints its normalized tables and exports.
 */
@Command(
        name = "table",
        mixinStandardHelpOptions = true,
        versionProvider = BlkstackVersion.class,
        description = "Device-mapper table tools.",
        subcommands = {TableCommand.Check.class})
final class TableCommand {

    /**
     * {@code blkstack table check FILE}: parses the configuration and builds the stack dry (every
     * bottom device a null device of its configured size, so no backing file is created or
     * opened), which runs every table line through its target's constructor against real device
     * sizes. Prints each mapped device's table as {@code Table} normalizes it and the exports;
     * on an error prints it (file, line, value) to stderr and exits 1.
     */
    @Command(
            name = "check",
            mixinStandardHelpOptions = true,
            versionProvider = BlkstackVersion.class,
            description = "Validate a YAML configuration without creating files, and print the normalized"
                    + " tables and exports.")
    static final class Check implements Callable<Integer> {

        /** Page arena of the dry-run kernel: enough for the mapped devices' bio sets. */
        static final long DRY_MEMORY_BYTES = 16L << 20;

        @Spec
        private CommandSpec spec;

        @Parameters(index = "0", paramLabel = "FILE", description = "The YAML configuration to check.")
        Path file;

        @Override
        public Integer call() {
            PrintWriter out = spec.commandLine().getOut();
            PrintWriter err = spec.commandLine().getErr();
            try {
                StackConfig config = StackConfig.load(file);
                String report = check(config);
                out.print(report);
                out.flush();
                return ExitCodes.SUCCESS;
            } catch (ConfigException e) {
                err.println("blkstack table check: " + e.getMessage());
                err.flush();
                return ExitCodes.USAGE;
            } catch (IOException e) {
                err.println("blkstack table check: " + file + ": cannot read: " + e);
                err.flush();
                return ExitCodes.USAGE;
            }
        }

        /** Builds the stack dry on a private kernel and describes it. */
        static String check(StackConfig config) throws ConfigException, IOException {
            Kernel kernel = Kernel.builder().name("table-check").memory(DRY_MEMORY_BYTES).build();
            try (Kernel.Attachment self = kernel.attach("table-check")) {
                try (Stack stack = Stack.build(kernel, config, Stack.Mode.DRY)) {
                    return describe(config, stack);
                } finally {
                    kernel.close();
                }
            }
        }

        /** The report: header, devices, each mapped device's normalized table, exports. */
        static String describe(StackConfig config, Stack stack) {
            StringBuilder sb = new StringBuilder();
            sb.append(config.source()).append(": valid\n");
            sb.append("memory ").append(Sizes.format(config.memoryBytes())).append(", listen ").append(config.listen())
                    .append(", drain-timeout ").append(Durations.format(config.drainTimeoutNanos()))
                    .append(", no-space-timeout ").append(Durations.format(config.noSpaceTimeoutNanos()))
                    .append('\n');
            sb.append("devices:\n");
            for (DeviceSpec d : config.devices()) {
                sb.append("  ").append(d.name()).append(": ").append(kind(d)).append(", ")
                        .append(Sizes.format(d.sizeBytes())).append(" (").append(d.sizeBytes() / 512)
                        .append(" sectors)\n");
            }
            sb.append("mapped:\n");
            for (MappedDevice m : stack.mappedDevices()) {
                sb.append("  ").append(m.name()).append(": ").append(m.capacitySectors()).append(" sectors\n");
                for (String line : m.status(StatusForm.TABLE)) {
                    sb.append("    ").append(line).append('\n');
                }
            }
            sb.append("exports:\n");
            for (Export e : stack.exports()) {
                BlockDevice d = e.device();
                sb.append("  ").append(e.name()).append(": ").append(d.name()).append(", ")
                        .append(Sizes.format(d.capacityBytes())).append(e.readOnly() ? ", read-only" : ", read-write");
                if (!e.description().isEmpty()) {
                    sb.append(", \"").append(e.description()).append('"');
                }
                sb.append('\n');
            }
            return sb.toString();
        }

        private static String kind(DeviceSpec d) {
            return switch (d) {
                case FileSpec f -> "file " + f.written() + (f.direct() ? " (direct)" : "");
                case MemorySpec m -> "memory" + (m.latencyNanos() > 0 ? ", latency " + m.latencyNanos() + " ns" : "");
                case NullSpec n -> "null" + (n.latencyNanos() > 0 ? ", latency " + n.latencyNanos() + " ns" : "");
                case StackConfig.RemoteSpec r -> "nbd " + r.uri();
            };
        }
    }

}
