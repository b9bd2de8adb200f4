package io.blkstack.nbd;

import jdk.jfr.Category;
import jdk.jfr.DataAmount;
import jdk.jfr.Description;
import jdk.jfr.Label;
import jdk.jfr.Name;
import jdk.jfr.StackTrace;

/**
 * JFR: one NBD request, from the reader taking its header off the wire to the writer having sent
 * its reply; the event's duration is the request's latency as the server sees it.
 *
 * <p>Allocated only while a recording enables it: the reader asks the server's
 * {@code EventType} ({@link NbdServer#requestEventsEnabled}, a flag read) before building one, so
 * the data path allocates nothing when no recording wants it. Begun by the reader and committed
 * by the writer, so its thread in a recording is the connection's writer task.
 */
@Name("blkstack.NbdRequest")
@Label("NBD Request")
@Category({"blkstack", "NBD"})
@Description("An NBD request from its header read to its reply sent")
@StackTrace(false)
public final class NbdRequestEvent extends jdk.jfr.Event {

    @Label("Connection")
    public String connection;

    @Label("Export")
    public String export;

    @Label("Command")
    public String command;

    @Label("Offset")
    public long offset;

    @Label("Length")
    @DataAmount
    public long length;

    @Label("Error")
    @Description("The NBD error value of the reply, 0 for success")
    public int errno;
}
