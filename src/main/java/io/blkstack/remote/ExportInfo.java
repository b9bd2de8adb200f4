package io.blkstack.remote;

import io.blkstack.nbd.NbdProtocol;

/**
 * What the handshake learned about the remote export.
 *
 * @param sizeBytes the export's size
 * @param transmissionFlags {@code NBD_FLAG_*} of the export
 * @param minBlockSize the server's minimum block size (1 if it gave none)
 * @param preferredBlockSize its preferred block size (4096 if it gave none)
 * @param maxPayload its largest payload (32 MiB if it gave none)
 * @param structuredReplies whether {@code NBD_OPT_STRUCTURED_REPLY} was accepted
 * @param allocationContextId the id of {@code base:allocation}, or -1 if it was not negotiated
 */
public record ExportInfo(long sizeBytes, int transmissionFlags, int minBlockSize, int preferredBlockSize,
        int maxPayload, boolean structuredReplies, long allocationContextId) {

    /** Whether the export has transmission flag {@code flag}. */
    public boolean has(int flag) {
        return (transmissionFlags & flag) != 0;
    }

    public boolean readOnly() {
        return has(NbdProtocol.FLAG_READ_ONLY);
    }

    /** A short line for logs and status. */
    public String describe() {
        StringBuilder sb = new StringBuilder().append(sizeBytes).append(" bytes");
        sb.append(", block sizes ").append(minBlockSize).append('/').append(preferredBlockSize).append('/')
                .append(maxPayload);
        sb.append(readOnly() ? ", read-only" : "").append(has(NbdProtocol.FLAG_SEND_FLUSH) ? ", flush" : "")
                .append(has(NbdProtocol.FLAG_SEND_FUA) ? ", fua" : "").append(has(NbdProtocol.FLAG_SEND_TRIM) ? ", trim" : "")
                .append(has(NbdProtocol.FLAG_SEND_WRITE_ZEROES) ? ", write-zeroes" : "")
                .append(has(NbdProtocol.FLAG_CAN_MULTI_CONN) ? ", multi-conn" : "")
                .append(structuredReplies ? ", structured replies" : "")
                .append(allocationContextId >= 0 ? ", base:allocation" : "");
        return sb.toString();
    }
}
