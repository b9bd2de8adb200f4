package io.blkstack.cli;

import io.blkstack.block.FileDevice;
import io.blkstack.block.LockedFile;
import io.blkstack.bufio.BufferCache;
import io.blkstack.config.ConfigException;
import io.blkstack.config.StackConfig;
import io.blkstack.config.StackConfig.DeviceSpec;
import io.blkstack.config.StackConfig.FileSpec;
import io.blkstack.config.StackConfig.MappedSpec;
import io.blkstack.dm.thin.Pool;
import io.blkstack.kernel.Kernel;
import io.blkstack.dm.thin.metadata.CorruptMetadataException;
import io.blkstack.dm.thin.metadata.ThinMetadata;
import java.io.IOException;
import java.io.PrintWriter;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.Callable;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;
import picocli.CommandLine.Parameters;
import picocli.CommandLine.Spec;
import picocli.CommandLine.Model.CommandSpec;

/** {@code blkstack thin}: thin-provisioning tools; {@code thin check} verifies pool metadata. */
@Command(
        name = "thin",
        mixinStandardHelpOptions = true,
        versionProvider = BlkstackVersion.class,
        description = "Thin provisioning tools.",
        subcommands = {ThinCommand.Check.class})
final class ThinCommand {

    /**
     * {@code blkstack thin check METADATA-FILE | CONFIG.yaml [--pool NAME] [--clear-needs-check]}:
     * reads the last committed metadata (nothing is written unless {@code --clear-needs-check}
     * applies) and runs {@link ThinMetadata#checkCommitted}: the superblock's and every tree block's
     * checksum (each bad block named), tree structure, reference counts against mappings,
     * free-space accounting, the needs_check flag. Exit 0 when clean, 2 with one line per problem
     * otherwise, 1 for usage errors. It takes a shared lock on the metadata file (exclusive with
     * {@code --clear-needs-check}): a pool being served is locked by its server, so the check says
     * the pool is live and exits 2 instead of reading a commit that is about to change (and no
     * server can start on the pool while the check runs).
     */
    @Command(
            name = "check",
            mixinStandardHelpOptions = true,
            versionProvider = BlkstackVersion.class,
            description = "Verify thin pool metadata (a metadata file, or a config file and pool name).")
    static final class Check implements Callable<Integer> {

        @Spec
        private CommandSpec spec;

        @Parameters(index = "0", paramLabel = "DEVICE-or-CONFIG",
                description = "A metadata device file, or a YAML configuration (.yaml/.yml).")
        Path target;

        @Option(names = "--pool", paramLabel = "NAME",
                description = "With a configuration: the mapped device holding the thin-pool (default: the first).")
        String pool;

        @Option(names = "--clear-needs-check",
                description = "If the metadata is otherwise clean, clear its needs_check flag (set when a pool hit a"
                        + " metadata error) so the pool opens read-write again.")
        boolean clearNeedsCheck;

        @Override
        public Integer call() {
            PrintWriter out = spec.commandLine().getOut();
            PrintWriter err = spec.commandLine().getErr();
            Path metadataFile;
            try {
                metadataFile = isConfig(target) ? metadataFileOf(StackConfig.load(target), pool) : target;
            } catch (ConfigException | IllegalArgumentException e) {
                err.println("blkstack thin check: " + e.getMessage());
                err.flush();
                return ExitCodes.USAGE;
            } catch (IOException e) {
                err.println("blkstack thin check: " + target + ": cannot read: " + e);
                err.flush();
                return ExitCodes.USAGE;
            }
            List<String> notes = new ArrayList<>();
            List<String> problems;
            try {
                problems = check(metadataFile, clearNeedsCheck, notes);
            } catch (LockedFile.FileInUseException e) {
                err.println("blkstack thin check: " + e.getMessage() + ": the pool is live (a running server holds"
                        + " its metadata); stop the server first, or check a copy of the file");
                err.flush();
                return ExitCodes.RUNTIME;
            }
            for (String note : notes) {
                out.println(metadataFile + ": " + note);
            }
            if (problems.isEmpty()) {
                out.println(metadataFile + ": thin metadata clean");
                out.flush();
                return ExitCodes.SUCCESS;
            }
            err.println(metadataFile + ": " + problems.size() + " problem(s):");
            for (String p : problems) {
                err.println("  " + p);
            }
            err.flush();
            return ExitCodes.RUNTIME;
        }

        private static boolean isConfig(Path p) {
            String n = p.getFileName().toString();
            return n.endsWith(".yaml") || n.endsWith(".yml");
        }

        /** The metadata file of the named (or first) thin-pool of a configuration. */
        static Path metadataFileOf(StackConfig config, String poolName) {
            List<String> pools = new ArrayList<>();
            for (MappedSpec m : config.mapped()) {
                for (String line : m.table().split("\n")) {
                    String[] w = line.trim().split("\\s+");
                    if (w.length >= 4 && w[2].equals("thin-pool")) {
                        pools.add(m.name());
                        if (poolName == null || poolName.equals(m.name())) {
                            return fileOf(config, w[3], m.name());
                        }
                    }
                }
            }
            throw new IllegalArgumentException(config.source() + ": " + (poolName == null ? "no thin-pool mapped device"
                    : "no thin-pool named '" + poolName + "' (thin-pools: " + pools + ")"));
        }

        private static Path fileOf(StackConfig config, String device, String pool) {
            for (DeviceSpec d : config.devices()) {
                if (d.name().equals(device)) {
                    if (d instanceof FileSpec f) {
                        return f.path();
                    }
                    throw new IllegalArgumentException("thin-pool " + pool + ": metadata device '" + device
                            + "' is not a file device; there is nothing on disk to check");
                }
            }
            throw new IllegalArgumentException("thin-pool " + pool + ": metadata device '" + device
                    + "' is not a bottom device of the configuration");
        }

        /** Opens the metadata file on a private kernel and checks the last commit. */
        static List<String> check(Path file) throws LockedFile.FileInUseException {
            return check(file, false, new ArrayList<>());
        }

        /**
         * Checks the last commit of the metadata file: every bad block is named (checksums, node
         * shapes), then the consistency rules. With {@code clearNeedsCheck}, metadata whose only
         * problem is its needs_check flag gets the flag cleared. Informational lines go to {@code notes}.
         * The file is locked shared, or exclusively when the flag may be cleared.
         *
         * @throws LockedFile.FileInUseException if a server (or a writable tool) holds the file
         */
        static List<String> check(Path file, boolean clearNeedsCheck, List<String> notes)
                throws LockedFile.FileInUseException {
            if (!Files.isRegularFile(file)) {
                return List.of("metadata file " + file + " does not exist");
            }
            Kernel kernel = Kernel.builder().name("thin-check").memory(16L << 20).build();
            try (Kernel.Attachment self = kernel.attach("thin-check")) {
                try {
                    long size = Files.size(file) / Pool.METADATA_BLOCK_SIZE * Pool.METADATA_BLOCK_SIZE;
                    if (size < 2L * Pool.METADATA_BLOCK_SIZE) {
                        return List.of("metadata file " + file + " holds " + Files.size(file) + " bytes, fewer than two blocks");
                    }
                    FileDevice dev = FileDevice.open(kernel, "meta", file, size,
                            FileDevice.Options.defaults().withLockShared(!clearNeedsCheck));
                    try (BufferCache cache = new BufferCache(dev, Pool.METADATA_BLOCK_SIZE)) {
                        List<String> problems = new ArrayList<>(ThinMetadata.checkCommitted(cache));
                        boolean onlyFlag = problems.size() == 1 && problems.get(0).startsWith("needs_check");
                        if (clearNeedsCheck && onlyFlag) {
                            ThinMetadata.open(cache, false).setNeedsCheck(false);
                            notes.add("needs_check cleared");
                            problems.clear();
                        }
                        if (problems.isEmpty()) {
                            int version = ThinMetadata.open(cache, false).version();
                            if (version != ThinMetadata.VERSION) {
                                notes.add("format " + version + " (no checksums): a pool opening it migrates it to format "
                                        + ThinMetadata.VERSION);
                            }
                        }
                        return problems;
                    } catch (CorruptMetadataException e) {
                        return List.of(e.getMessage());
                    } finally {
                        dev.close();
                    }
                } catch (LockedFile.FileInUseException e) {
                    throw e;
                } catch (IOException e) {
                    return List.of("cannot read " + file + ": " + e);
                } finally {
                    kernel.close();
                }
            }
        }
    }
}
