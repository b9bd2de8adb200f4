package io.blkstack.dm.thin;

import io.blkstack.bio.Bio;
import io.blkstack.bio.BioStatus;
import io.blkstack.block.BlockDevice;
import io.blkstack.dm.MapResult;
import io.blkstack.dm.TableException;
import io.blkstack.dm.Target;
import io.blkstack.dm.TargetArgs;
import io.blkstack.dm.TargetIo;
import io.blkstack.dm.thin.Pool;
import io.blkstack.dm.thin.PoolRegistry;
import java.util.ArrayList;
import java.util.List;

/**
 * {@code thin-pool <metadata dev> <data dev> <block sectors> <low water blocks> [<#features>
 * skip_block_zeroing|ignore_discard|error_if_no_space|read_only|no_space_timeout=SECONDS ...]}: a pool of data blocks that
 * {@code thin} devices provision from (dm-thin's pool target). The metadata device is opened
 * through a buffer cache; if it holds no thin superblock it is formatted. Block size: a power of
 * two from 8 to 2048 sectors (dm requires multiples of 128; smaller blocks are allowed for tests).
 *
 * <p>{@code no_space_timeout=SECONDS} is dm-thin's module parameter of that name as a per-pool
 * feature (a blkstack extension): how long writes that need a data block wait for space before
 * they fail with ENOSPC; 0 waits for ever; without it the pool gets the configuration's default
 * ({@link #applyDefaultNoSpaceTimeout}), else 60 s.
 *
 * <p>Messages: {@code create_thin ID}, {@code create_snap ID ORIGIN_ID}, {@code delete ID}, each
 * committed before the reply. Status: see {@link Pool#statusInfo}.
 *
 * <p><b>I/O to the pool device itself</b> is rejected with EIO (flushes go to the data device):
 * dm passes it through to the data device, but writing there behind the metadata's back corrupts
 * every thin device, and nothing legitimate reads it.
 */
public final class ThinPoolTarget extends Target {

    /** The table type name. */
    public static final String TYPE = "thin-pool";

    private final List<String> words;
    private final BlockDevice dataDevice;
    private final boolean noSpaceTimeoutInTable;
    /** The kernel's table of open pools. */
    private final PoolRegistry registry;
    private Pool pool;

    /** Parses the arguments and binds (opening or formatting) the pool. */
    public ThinPoolTarget(TargetArgs args) throws TableException {
        super(args);
        args.requireCountAtLeast(4, "<metadata dev> <data dev> <block sectors> <low water blocks> [<#features> <feature>...]");
        this.words = args.words();
        BlockDevice meta = args.device(1);
        this.dataDevice = args.device(2);
        if (meta == dataDevice) {
            throw args.error(2, "is the metadata device too");
        }
        int blockSectors = args.intInRange(3, 8, 2048, "block size in sectors");
        if (Integer.bitCount(blockSectors) != 1) {
            throw args.error(3, "block size must be a power of two");
        }
        long lowWater = args.unsigned(4, "is not a number of blocks (low water mark)");
        Pool.Features features = parseFeatures(args);
        this.noSpaceTimeoutInTable = words.stream().anyMatch(w -> w.startsWith(NO_SPACE_TIMEOUT_PREFIX));
        try {
            this.registry = PoolRegistry.of(args.kernel());
            this.pool = registry.bind(args.mappedDeviceName(), meta,
                    () -> Pool.open(args.kernel(), args.mappedDeviceName(), meta, dataDevice, blockSectors, lowWater, features));
        } catch (IllegalArgumentException | io.blkstack.dm.thin.metadata.CorruptMetadataException e) {
            throw args.error(1, e.getMessage());
        }
    }

    /** The feature word that sets the no_space_timeout, before its seconds. */
    static final String NO_SPACE_TIMEOUT_PREFIX = "no_space_timeout=";
    /** The longest no_space_timeout accepted: one day. */
    static final long NO_SPACE_TIMEOUT_SECONDS_MAX = 86_400;

    private static Pool.Features parseFeatures(TargetArgs args) throws TableException {
        if (args.count() == 4) {
            return Pool.Features.none();
        }
        int n = args.intInRange(5, 0, 5, "feature count");
        if (args.count() != 5 + n) {
            throw args.error(5, "says " + n + " feature(s) but " + (args.count() - 5) + " follow");
        }
        boolean skip = false;
        boolean ignore = false;
        boolean error = false;
        boolean ro = false;
        long timeoutNanos = Pool.NO_SPACE_TIMEOUT_DEFAULT_NANOS;
        for (int i = 6; i < 6 + n; i++) {
            String word = args.word(i);
            switch (word) {
                case "skip_block_zeroing" -> skip = true;
                case "ignore_discard" -> ignore = true;
                case "error_if_no_space" -> error = true;
                case "read_only" -> ro = true;
                default -> {
                    if (!word.startsWith(NO_SPACE_TIMEOUT_PREFIX)) {
                        throw args.error(i, "is not a feature (skip_block_zeroing, ignore_discard, error_if_no_space,"
                                + " read_only, no_space_timeout=SECONDS)");
                    }
                    timeoutNanos = noSpaceTimeoutSeconds(args, i, word.substring(NO_SPACE_TIMEOUT_PREFIX.length()))
                            * 1_000_000_000L;
                }
            }
        }
        return new Pool.Features(skip, ignore, error, ro, timeoutNanos);
    }

    /** The seconds of a {@code no_space_timeout=} word: a whole number from 0 to a day. */
    private static long noSpaceTimeoutSeconds(TargetArgs args, int index, String digits) throws TableException {
        long seconds;
        try {
            seconds = Long.parseLong(digits);
        } catch (NumberFormatException e) {
            seconds = -1;
        }
        if (seconds < 0 || seconds > NO_SPACE_TIMEOUT_SECONDS_MAX || !digits.chars().allMatch(Character::isDigit)) {
            throw args.error(index, "is not no_space_timeout=SECONDS with whole seconds from 0 (wait for ever) to "
                    + NO_SPACE_TIMEOUT_SECONDS_MAX);
        }
        return seconds;
    }

    /**
     * Gives the pool the configuration's default {@code no_space_timeout} unless this table line
     * set one (the YAML {@code no-space-timeout}, standing in for dm-thin's module parameter).
     */
    public void applyDefaultNoSpaceTimeout(long nanos) {
        if (!noSpaceTimeoutInTable) {
            pool.setNoSpaceTimeoutNanos(nanos);
        }
    }

    /** Flushes go to the data device; data I/O to the pool device is rejected (see the class comment). */
    @Override
    public MapResult map(Bio clone, TargetIo io) {
        if (clone.sizeBytes() == 0) {
            clone.setDevice(dataDevice).setSector(0);
            return MapResult.REMAPPED;
        }
        clone.setStatus(BioStatus.IOERR);
        return MapResult.KILL;
    }

    @Override
    public String message(String[] args) {
        return pool.message(args);
    }

    @Override
    public String statusInfo() {
        return pool.statusInfo();
    }

    @Override
    public String statusTable() {
        return String.join(" ", words);
    }

    /** Fails the writes waiting for data space (see {@link Pool#failWaitingForSpace}). */
    @Override
    public int failWaiting(BioStatus status) {
        return pool == null ? 0 : pool.failWaitingForSpace(status);
    }

    @Override
    public int flushBioCount() {
        return 1;
    }

    @Override
    public List<BlockDevice> devices() {
        List<BlockDevice> out = new ArrayList<>();
        out.add(pool.metadataDevice());
        out.add(dataDevice);
        return out;
    }

    /** The pool runtime. */
    public Pool pool() {
        return pool;
    }

    @Override
    public void close() {
        if (pool != null) {
            Pool p = pool;
            pool = null;
            registry.release(p);
        }
    }
}
