package io.blkstack.nbd;

import io.blkstack.bio.BioStatus;

/**
 * The wire constants of the NBD protocol, taken from the NBD project's {@code doc/proto.md}
 * (fixed newstyle handshake, simple and structured replies, {@code base:allocation}). All values
 * travel in network byte order. Nothing here carries state.
 */
public final class NbdProtocol {

    private NbdProtocol() {
    }

    // ---- magic numbers -------------------------------------------------------------------------

    /** ASCII {@code NBDMAGIC}: the first 8 bytes the server sends. */
    public static final long NBDMAGIC = 0x4e42444d41474943L;
    /** ASCII {@code IHAVEOPT}: newstyle handshake, and the prefix of every client option. */
    public static final long IHAVEOPT = 0x49484156454F5054L;
    /** The magic of every option reply in fixed newstyle. */
    public static final long OPTION_REPLY_MAGIC = 0x3e889045565a9L;
    /** {@code NBD_REQUEST_MAGIC}. */
    public static final int REQUEST_MAGIC = 0x25609513;
    /** {@code NBD_SIMPLE_REPLY_MAGIC}. */
    public static final int SIMPLE_REPLY_MAGIC = 0x67446698;
    /** {@code NBD_STRUCTURED_REPLY_MAGIC}. */
    public static final int STRUCTURED_REPLY_MAGIC = 0x668e33ef;

    // ---- handshake flags (16 bits, server) and client flags (32 bits) --------------------------

    public static final int FLAG_FIXED_NEWSTYLE = 1;
    public static final int FLAG_NO_ZEROES = 1 << 1;
    public static final int FLAG_C_FIXED_NEWSTYLE = 1;
    public static final int FLAG_C_NO_ZEROES = 1 << 1;

    // ---- transmission flags (16 bits) ----------------------------------------------------------

    public static final int FLAG_HAS_FLAGS = 1;
    public static final int FLAG_READ_ONLY = 1 << 1;
    public static final int FLAG_SEND_FLUSH = 1 << 2;
    public static final int FLAG_SEND_FUA = 1 << 3;
    public static final int FLAG_ROTATIONAL = 1 << 4;
    public static final int FLAG_SEND_TRIM = 1 << 5;
    public static final int FLAG_SEND_WRITE_ZEROES = 1 << 6;
    public static final int FLAG_SEND_DF = 1 << 7;
    public static final int FLAG_CAN_MULTI_CONN = 1 << 8;
    public static final int FLAG_SEND_CACHE = 1 << 10;
    public static final int FLAG_SEND_FAST_ZERO = 1 << 11;

    // ---- options -------------------------------------------------------------------------------

    public static final int OPT_EXPORT_NAME = 1;
    public static final int OPT_ABORT = 2;
    public static final int OPT_LIST = 3;
    public static final int OPT_STARTTLS = 5;
    public static final int OPT_INFO = 6;
    public static final int OPT_GO = 7;
    public static final int OPT_STRUCTURED_REPLY = 8;
    public static final int OPT_LIST_META_CONTEXT = 9;
    public static final int OPT_SET_META_CONTEXT = 10;

    // ---- option reply types --------------------------------------------------------------------

    public static final int REP_ACK = 1;
    public static final int REP_SERVER = 2;
    public static final int REP_INFO = 3;
    public static final int REP_META_CONTEXT = 4;
    public static final int REP_ERR_UNSUP = 0x80000001;
    public static final int REP_ERR_POLICY = 0x80000002;
    public static final int REP_ERR_INVALID = 0x80000003;
    public static final int REP_ERR_PLATFORM = 0x80000004;
    public static final int REP_ERR_TLS_REQD = 0x80000005;
    public static final int REP_ERR_UNKNOWN = 0x80000006;
    public static final int REP_ERR_SHUTDOWN = 0x80000007;
    public static final int REP_ERR_BLOCK_SIZE_REQD = 0x80000008;
    public static final int REP_ERR_TOO_BIG = 0x80000009;

    // ---- NBD_REP_INFO information types --------------------------------------------------------

    public static final int INFO_EXPORT = 0;
    public static final int INFO_NAME = 1;
    public static final int INFO_DESCRIPTION = 2;
    public static final int INFO_BLOCK_SIZE = 3;

    // ---- commands and command flags ------------------------------------------------------------

    public static final int CMD_READ = 0;
    public static final int CMD_WRITE = 1;
    public static final int CMD_DISC = 2;
    public static final int CMD_FLUSH = 3;
    public static final int CMD_TRIM = 4;
    public static final int CMD_CACHE = 5;
    public static final int CMD_WRITE_ZEROES = 6;
    public static final int CMD_BLOCK_STATUS = 7;

    public static final int CMD_FLAG_FUA = 1;
    public static final int CMD_FLAG_NO_HOLE = 1 << 1;
    public static final int CMD_FLAG_DF = 1 << 2;
    public static final int CMD_FLAG_REQ_ONE = 1 << 3;
    public static final int CMD_FLAG_FAST_ZERO = 1 << 4;

    // ---- structured replies --------------------------------------------------------------------

    public static final int REPLY_FLAG_DONE = 1;

    public static final int REPLY_TYPE_NONE = 0;
    public static final int REPLY_TYPE_OFFSET_DATA = 1;
    public static final int REPLY_TYPE_OFFSET_HOLE = 2;
    public static final int REPLY_TYPE_BLOCK_STATUS = 5;
    public static final int REPLY_TYPE_ERROR = 0x8001;
    public static final int REPLY_TYPE_ERROR_OFFSET = 0x8002;

    /** {@code base:allocation} extent flags. */
    public static final int STATE_HOLE = 1;
    public static final int STATE_ZERO = 1 << 1;

    /** The one metadata context this server offers. */
    public static final String META_BASE_ALLOCATION = "base:allocation";

    // ---- error values --------------------------------------------------------------------------

    public static final int EPERM = 1;
    public static final int EIO = 5;
    public static final int ENOMEM = 12;
    public static final int EINVAL = 22;
    public static final int ENOSPC = 28;
    public static final int EOVERFLOW = 75;
    public static final int ENOTSUP = 95;
    public static final int ESHUTDOWN = 108;

    // ---- sizes ---------------------------------------------------------------------------------

    /** Bytes of a request header. */
    public static final int REQUEST_HEADER_BYTES = 28;
    /** Bytes of a simple reply header. */
    public static final int SIMPLE_REPLY_BYTES = 16;
    /** Bytes of a structured reply chunk header. */
    public static final int STRUCTURED_HEADER_BYTES = 20;
    /** The largest payload a client may assume without negotiation: 2^25 bytes (32 MiB). */
    public static final int DEFAULT_MAX_PAYLOAD = 1 << 25;
    /** The longest string (export name, description) the protocol allows. */
    public static final int STRING_BYTES_MAX = 4096;

    /** The NBD error value for a bio status: only the values the protocol defines (EAGAIN becomes EIO). */
    public static int errnoOf(BioStatus status) {
        return switch (status) {
            case OK -> 0;
            case PERM -> EPERM;
            case INVAL -> EINVAL;
            case NOSPC -> ENOSPC;
            case NOTSUPP -> ENOTSUP;
            case IOERR, AGAIN -> EIO;
        };
    }

    /** A readable name for a command, for messages. */
    public static String commandName(int command) {
        return switch (command) {
            case CMD_READ -> "READ";
            case CMD_WRITE -> "WRITE";
            case CMD_DISC -> "DISC";
            case CMD_FLUSH -> "FLUSH";
            case CMD_TRIM -> "TRIM";
            case CMD_CACHE -> "CACHE";
            case CMD_WRITE_ZEROES -> "WRITE_ZEROES";
            case CMD_BLOCK_STATUS -> "BLOCK_STATUS";
            default -> "command " + command;
        };
    }
}
