package io.blkstack.dm.logwrites;

import java.io.IOException;
import java.util.List;

/**
 * Rebuilds a device from a write log (the tool behind {@code blkstack log-writes replay}): applies
 * the entries in log order, up to and including the named mark, to a {@link LogSink}. Writes copy
 * their data, discards zero their range, flushes and marks change nothing.
 */
public final class LogReplay {

    /** Bytes copied per step. */
    private static final int CHUNK_BYTES = 1 << 20;

    /** What a replay did. */
    public record Result(long entriesApplied, long writes, long discards, LogEntry mark) {
    }

    private LogReplay() {
    }

    /**
     * Replays {@code reader}'s log into {@code sink} up to mark {@code toMark} (the first mark of that
     * name), or the whole log if {@code toMark} is null.
     *
     * @throws IllegalArgumentException if the log has no mark of that name (nothing is written)
     */
    public static Result replay(LogReader reader, LogSink sink, String toMark) throws IOException {
        List<LogEntry> entries = reader.entries();
        int end = entries.size();
        LogEntry mark = null;
        if (toMark != null) {
            end = -1;
            for (LogEntry e : entries) {
                if (e.isMark() && e.mark().equals(toMark)) {
                    end = (int) e.index() + 1;
                    mark = e;
                    break;
                }
            }
            if (end < 0) {
                throw new IllegalArgumentException("the log has no mark '" + toMark + "' (" + entries.size()
                        + " entries)");
            }
        }
        byte[] chunk = new byte[CHUNK_BYTES];
        long writes = 0;
        long discards = 0;
        for (int i = 0; i < end; i++) {
            LogEntry e = entries.get(i);
            if ((e.flags() & LogFormat.DISCARD) != 0) {
                sink.zero(e.sector() * 512, e.nrSectors() * 512);
                discards++;
            } else if (e.hasData(reader.sectorSize())) {
                long bytes = e.nrSectors() * 512;
                for (long done = 0; done < bytes; ) {
                    int n = (int) Math.min(chunk.length, bytes - done);
                    reader.readData(e, done, chunk, 0, n);
                    sink.write(e.sector() * 512 + done, chunk, 0, n);
                    done += n;
                }
                writes++;
            }
        }
        return new Result(end, writes, discards, mark);
    }
}
