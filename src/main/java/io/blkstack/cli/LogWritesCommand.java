package io.blkstack.cli;

import io.blkstack.block.LockedFile;
import io.blkstack.dm.logwrites.LogEntry;
import io.blkstack.dm.logwrites.LogReader;
import io.blkstack.dm.logwrites.LogReplay;
import io.blkstack.dm.logwrites.LogSink;
import io.blkstack.dm.logwrites.LogSource;
import java.io.IOException;
import java.io.PrintWriter;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.concurrent.Callable;

import picocli.CommandLine.Command;
import picocli.CommandLine.Model.CommandSpec;
import picocli.CommandLine.Option;
import picocli.CommandLine.Parameters;
import picocli.CommandLine.Spec;

/**
 * {@code blkstack log-writes}: offline tools for logs written by the {@code log-writes} target
 * ({@link io.blkstack.dm.logwrites.LogFormat}): {@code list LOG} prints the committed entries and
 * marks; {@code replay LOG DEV [--to MARK]} rebuilds a device file as it was at a mark, the basis
 * of crash-consistency tests. Plain file I/O: the tools run without a kernel.
 */
@Command(
        name = "log-writes",
        mixinStandardHelpOptions = true,
        versionProvider = BlkstackVersion.class,
        description = "Read and replay logs written by the log-writes target.",
        subcommands = {LogWritesCommand.ListEntries.class, LogWritesCommand.Replay.class})
final class LogWritesCommand {

    /** {@code blkstack log-writes list LOG}: one line per committed entry; {@code --marks} for marks only. */
    @Command(
            name = "list",
            mixinStandardHelpOptions = true,
            versionProvider = BlkstackVersion.class,
            description = "List the entries (writes, discards, flushes, marks) of a write log.")
    static final class ListEntries implements Callable<Integer> {

        @Spec
        private CommandSpec spec;

        @Parameters(index = "0", paramLabel = "LOG", description = "The log device's file.")
        Path log;

        @Option(names = "--marks", description = "Print only the marks.")
        boolean marksOnly;

        /** Prints the entries; a missing or malformed log is exit 1 with the reason. */
        @Override
        public Integer call() {
            PrintWriter out = spec.commandLine().getOut();
            PrintWriter err = spec.commandLine().getErr();
            try (LockedFile locked = LockedFile.shared(log)) {
                LogReader reader = new LogReader(LogSource.of(locked.channel()));
                List<LogEntry> entries = reader.entries();
                if (!marksOnly) {
                    out.println("# " + entries.size() + " entries, block size " + reader.sectorSize()
                            + (reader.hasChecksums() ? ", crc32c checked" : ", no checksums"));
                }
                for (LogEntry e : entries) {
                    if (!marksOnly || e.isMark()) {
                        out.println(e.describe());
                    }
                }
                out.flush();
                return ExitCodes.SUCCESS;
            } catch (LockedFile.FileInUseException e) {
                err.println("log-writes list: " + e.getMessage());
                return ExitCodes.RUNTIME;
            } catch (IOException e) {
                err.println("log-writes list: " + log + ": " + e.getMessage());
                return ExitCodes.USAGE;
            }
        }
    }

    /** {@code blkstack log-writes replay LOG DEV [--to MARK]}: rebuilds DEV from the log. */
    @Command(
            name = "replay",
            mixinStandardHelpOptions = true,
            versionProvider = BlkstackVersion.class,
            description = "Replay a write log onto a device file, up to and including a mark.")
    static final class Replay implements Callable<Integer> {

        @Spec
        private CommandSpec spec;

        @Parameters(index = "0", paramLabel = "LOG", description = "The log device's file.")
        Path log;

        @Parameters(index = "1", paramLabel = "DEV", description = "The device file to rebuild (created if missing;"
                + " start from a copy of the device as it was when logging began, usually zeroes).")
        Path device;

        @Option(names = "--to", paramLabel = "MARK", description = "Stop after this mark (default: the whole log).")
        String mark;

        /** Replays; a bad log or an unknown mark is exit 1, a failing device write exit 2. */
        @Override
        public Integer call() {
            PrintWriter out = spec.commandLine().getOut();
            PrintWriter err = spec.commandLine().getErr();
            LogReader reader;
            LockedFile logFile;
            try {
                logFile = LockedFile.shared(log); // read-only: a server may not write the log meanwhile
            } catch (LockedFile.FileInUseException e) {
                err.println("log-writes replay: " + e.getMessage());
                return ExitCodes.RUNTIME;
            } catch (IOException e) {
                err.println("log-writes replay: " + log + ": " + e.getMessage());
                return ExitCodes.USAGE;
            }
            try (LockedFile lc = logFile) {
                try {
                    reader = new LogReader(LogSource.of(lc.channel()));
                    reader.entries();
                } catch (IOException e) {
                    err.println("log-writes replay: " + log + ": " + e.getMessage());
                    return ExitCodes.USAGE;
                }
                if (Files.isDirectory(device)) {
                    err.println("log-writes replay: " + device + " is a directory");
                    return ExitCodes.USAGE;
                }
                try (LockedFile dev = LockedFile.exclusive(device, true)) { // written: no one else may use it
                    LogReplay.Result r = LogReplay.replay(reader, LogSink.of(dev.channel()), mark);
                    dev.channel().force(true);
                    out.println("replayed " + r.entriesApplied() + " entries (" + r.writes() + " writes, "
                            + r.discards() + " discards)" + (r.mark() == null ? "" : " to mark " + r.mark().mark()
                            + " at entry " + r.mark().index()) + " onto " + device);
                    out.flush();
                    return ExitCodes.SUCCESS;
                } catch (IllegalArgumentException e) {
                    err.println("log-writes replay: " + e.getMessage());
                    return ExitCodes.USAGE;
                }
            } catch (LockedFile.FileInUseException e) {
                err.println("log-writes replay: " + e.getMessage());
                return ExitCodes.RUNTIME;
            } catch (IOException e) {
                err.println("log-writes replay: " + device + ": " + e.getMessage());
                return ExitCodes.RUNTIME;
            }
        }
    }
}
