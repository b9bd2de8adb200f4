package io.blkstack.dm.logwrites;

/**
 * One entry of a write log as read back: its number, where it sits in the log, and what it
 * records (a write, a discard, a flush or a mark).
 *
 * @param index the entry's number, from 0
 * @param logOffset the byte offset of the entry's header block in the log
 * @param sector the first 512-byte sector of the logged device
 * @param nrSectors how many sectors the write or discard covered
 * @param flags {@link LogFormat} flag bits
 * @param mark the mark's name, or null
 */
public record LogEntry(long index, long logOffset, long sector, long nrSectors, long flags, String mark) {

    /** Whether this entry is a mark. */
    public boolean isMark() {
        return (flags & LogFormat.MARK) != 0;
    }

    /** Whether this entry carries data that follows its header. */
    public boolean hasData(int sectorSize) {
        return LogFormat.dataBytes(nrSectors, flags, sectorSize) > 0;
    }

    /** One line for {@code blkstack log-writes list}. */
    public String describe() {
        if (isMark()) {
            return index + " mark " + mark;
        }
        String what = (flags & LogFormat.DISCARD) != 0 ? "discard" : nrSectors == 0 ? "flush" : "write";
        return index + " " + what + " " + sector + "+" + nrSectors + " " + LogFormat.describeFlags(flags);
    }
}
