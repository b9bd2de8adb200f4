package io.blkstack.nbd;

import static io.blkstack.nbd.NbdProtocol.*;

import io.blkstack.bio.Bio;
import io.blkstack.bio.BioFlags;
import io.blkstack.bio.BioOp;
import io.blkstack.block.BlockDevice;
import io.blkstack.block.Submit;
import io.blkstack.mem.Page;
import java.util.concurrent.atomic.AtomicLong;

/**
 * The reader's handling of one parsed request: validation against the protocol and the export
 * (errors exactly as {@code doc/proto.md} prescribes), then the command. READ and WRITE are
 * {@link ReadWriteCommands}; FLUSH, TRIM, WRITE_ZEROES, BLOCK_STATUS and CACHE are here.
 *
 * <p>Every command ends with the reader's {@link NbdRequest#put put}; the request's last hold
 * (the reader's or a bio's completion) hands it to the writer. A refused WRITE's payload is
 * skipped (or, if too long to skip, the connection ends).
 */
final class RequestHandler {

    /** Bytes one payload-less bio (trim, zeroes) covers; the device splits it further. */
    static final int NODATA_BIO_BYTES_MAX = 1 << 30;

    private final RequestInput input;
    private final RequestBios bios;
    private final ReadModifyWrite rmw;
    private final ReadWriteCommands readWrite;
    private final Export export;
    private final BlockDevice device;
    private final int blockBytes;
    private final boolean baseAllocation;
    /** Whether the client asked for the block sizes (and so is held to the advertised maximum). */
    private final boolean blockSizesKnown;
    /** Kernel counter {@code nbd.read-modify-writes} (WRITE_ZEROES's part of it). */
    private final AtomicLong readModifyWrites;

    RequestHandler(NbdConnection connection, RequestInput input, RequestBios bios, NbdHandshake.Negotiated negotiated) {
        this.input = input;
        this.bios = bios;
        this.rmw = new ReadModifyWrite(connection.name(), bios);
        this.export = negotiated.export();
        this.device = bios.device();
        this.blockBytes = bios.blockBytes;
        this.baseAllocation = negotiated.baseAllocation();
        this.blockSizesKnown = negotiated.blockSizesKnown();
        this.readWrite = new ReadWriteCommands(connection, input, bios, rmw, export, negotiated.structuredReplies());
        this.readModifyWrites = connection.kernel().counters().get("nbd.read-modify-writes");
    }

    /**
     * Checks a request against the protocol and the export.
     *
     * @return 0, or the NBD error the specification prescribes
     */
    int validate(int command, int flags, long offset, long length) {
        int allowed = CMD_FLAG_FUA;
        switch (command) {
            case CMD_READ, CMD_WRITE, CMD_FLUSH, CMD_TRIM, CMD_CACHE -> {
            }
            case CMD_WRITE_ZEROES -> allowed |= CMD_FLAG_NO_HOLE
                    | ((export.transmissionFlags() & FLAG_SEND_FAST_ZERO) != 0 ? CMD_FLAG_FAST_ZERO : 0);
            case CMD_BLOCK_STATUS -> allowed |= CMD_FLAG_REQ_ONE;
            default -> {
                return EINVAL; // unknown command
            }
        }
        if ((flags & ~allowed) != 0) {
            return EINVAL; // unknown flag, or a flag not documented for this command
        }
        boolean writes = command == CMD_WRITE || command == CMD_TRIM || command == CMD_WRITE_ZEROES;
        if (writes && export.readOnly()) {
            return EPERM;
        }
        if (command == CMD_BLOCK_STATUS && !baseAllocation) {
            return EINVAL; // no metadata context selected
        }
        if (command == CMD_FLUSH) {
            return offset == 0 && length == 0 ? 0 : EINVAL;
        }
        if ((command == CMD_READ || command == CMD_WRITE) && length > export.maximumPayload() && blockSizesKnown) {
            return EINVAL; // a client that never asked for the maximum may send any length: served in windows
        }
        long size = export.sizeBytes();
        if (offset < 0 || offset > size || length > size - offset) {
            return command == CMD_WRITE || command == CMD_WRITE_ZEROES ? ENOSPC : EINVAL;
        }
        int min = export.minimumBlockSize();
        if (offset % min != 0 || length % min != 0) {
            return EINVAL;
        }
        if (command == CMD_BLOCK_STATUS && length == 0) {
            return EINVAL; // a reply needs at least one descriptor of nonzero length
        }
        if (command == CMD_WRITE_ZEROES && (flags & CMD_FLAG_FAST_ZERO) != 0 && !export.fastZero()) {
            return ENOTSUP; // fail fast: zeroing here is no faster than writing
        }
        return 0;
    }

    /** Serves one request; false if the reader must stop. */
    boolean serve(NbdRequest r) {
        int errno = validate(r.command, r.commandFlags, r.offset, r.length);
        if (errno != 0) {
            boolean more = true;
            if (r.command == CMD_WRITE) {
                more = input.skipPayload(r.length);
            }
            r.fail(errno);
            r.put();
            return more;
        }
        int fua = (r.commandFlags & CMD_FLAG_FUA) != 0 ? BioFlags.FUA : 0;
        switch (r.command) {
            case CMD_READ -> {
                return readWrite.read(r);
            }
            case CMD_WRITE -> {
                return readWrite.write(r, fua);
            }
            case CMD_FLUSH -> {
                return flush(r);
            }
            case CMD_TRIM -> {
                return trim(r, fua);
            }
            case CMD_WRITE_ZEROES -> {
                int noUnmap = (r.commandFlags & CMD_FLAG_NO_HOLE) != 0 ? BioFlags.NOUNMAP : 0;
                return writeZeroes(r, fua | noUnmap);
            }
            case CMD_BLOCK_STATUS -> {
                blockStatus(r);
                r.put();
                return true;
            }
            default -> { // CACHE: a hint; this server has no cache to fill, and success is allowed
                r.put();
                return true;
            }
        }
    }

    /** FLUSH: one empty flush bio. */
    private boolean flush(NbdRequest r) {
        Bio bio = bios.allocEmptyBio();
        if (bio == null) {
            return bios.abandon(r);
        }
        bios.submit(r, bio, BioOp.FLUSH, 0, 0);
        r.put();
        return true;
    }

    /**
     * TRIM: the whole logical blocks inside the range (trimming is advisory, so the partial blocks
     * at the ends keep their data, as the spec allows); tracked, not serialising.
     */
    private boolean trim(NbdRequest r, int flags) {
        long start = bios.alignUp(r.offset);
        long end = bios.alignDown(r.offset + r.length);
        if (end <= start) {
            r.put();
            return true;
        }
        if (!r.track(device.trackedRequests(), start, end, false)) {
            return failUntracked(r);
        }
        return noDataRange(r, BioOp.DISCARD, flags, start, end);
    }

    /**
     * WRITE_ZEROES: the whole logical blocks inside the range as zeroes bios; the partial blocks at
     * the ends by read-modify-write (read the block, zero the client's bytes, write it back), one
     * synchronous block at a time through one budget page, registered as serialising.
     */
    private boolean writeZeroes(NbdRequest r, int flags) {
        long end = r.offset + r.length;
        long start = bios.alignDown(r.offset);
        long paddedEnd = bios.alignUp(end);
        int head = (int) (r.offset - start);
        int tail = (int) (paddedEnd - end);
        if (r.length == 0) {
            r.put();
            return true;
        }
        boolean partial = head != 0 || tail != 0;
        if (!r.track(device.trackedRequests(), start, paddedEnd, partial)) {
            return failUntracked(r);
        }
        if (partial) {
            readModifyWrites.incrementAndGet();
            if (!bios.chargeBudget(r, Page.SIZE)) {
                return bios.abandon(r);
            }
            int writeFlags = flags & BioFlags.FUA;
            if (head != 0 && !rmw.zeroInBlock(start, head, (int) Math.min(blockBytes, head + r.length), writeFlags)) {
                r.fail(EIO);
            }
            long lastBlock = paddedEnd - blockBytes;
            boolean sameBlock = head != 0 && lastBlock == start;
            if (tail != 0 && !sameBlock && !rmw.zeroInBlock(lastBlock, 0, blockBytes - tail, writeFlags)) {
                r.fail(EIO);
            }
        }
        long middleStart = bios.alignUp(r.offset);
        long middleEnd = bios.alignDown(end);
        if (middleEnd <= middleStart || r.errno() != 0) {
            r.put();
            return true;
        }
        return noDataRange(r, BioOp.WRITE_ZEROES, flags, middleStart, middleEnd);
    }

    /** TRIM and WRITE_ZEROES of {@code [start, end)}: payload-less bios of at most 1 GiB each, submitted one after another. */
    /** Fails a request whose range overlaps a write lost to a fault; the reader goes on. */
    private static boolean failUntracked(NbdRequest r) {
        r.fail(EIO);
        r.put();
        return true;
    }

    private boolean noDataRange(NbdRequest r, BioOp op, int flags, long start, long end) {
        long position = start;
        while (position < end) {
            int n = (int) Math.min(end - position, NODATA_BIO_BYTES_MAX);
            Bio bio = bios.allocEmptyBio();
            if (bio == null) {
                return bios.abandon(r);
            }
            bio.init(device, op, flags, position >>> Bio.SECTOR_SHIFT);
            bio.setSizeBytes(n);
            r.addBio(bio);
            bio.setEndIo(NbdRequest.END_IO).setPrivateData(r);
            Submit.submitBio(bio);
            position += n;
        }
        r.put();
        return true;
    }

    /**
     * BLOCK_STATUS for {@code base:allocation}: the device's map over the range padded out to
     * whole sectors, then cut back to the client's range; all data if the device keeps no map.
     */
    private void blockStatus(NbdRequest r) {
        boolean one = (r.commandFlags & CMD_FLAG_REQ_ONE) != 0;
        if (!device.knowsAllocation()) {
            r.addExtent(r.length, false);
            return;
        }
        long end = r.offset + r.length;
        long start = r.offset & -(long) Bio.SECTOR_SIZE;
        long paddedEnd = (end + Bio.SECTOR_SIZE - 1) & -(long) Bio.SECTOR_SIZE;
        ReadWriteCommands.mapExtents(device, r, start, paddedEnd, one ? 1 : NbdConnection.STATUS_EXTENTS_MAX, true);
        long covered = 0;
        for (int e = 0; e < r.extentCount; e++) {
            covered += r.extentBytes[e];
        }
        r.extentBytes[0] -= r.offset - start;
        if (covered == paddedEnd - start) {
            r.extentBytes[r.extentCount - 1] -= paddedEnd - end;
        }
    }
}
