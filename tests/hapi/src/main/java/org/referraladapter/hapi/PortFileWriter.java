package org.referraladapter.hapi;

import org.slf4j.Logger;
import org.slf4j.LoggerFactory;
import org.springframework.beans.factory.annotation.Value;
import org.springframework.boot.web.context.WebServerInitializedEvent;
import org.springframework.context.ApplicationListener;

import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;

/**
 * Writes the port Tomcat actually bound (server.port=0 picks a free one) to the file named by
 * hapi.launcher.port-file, so hapi.sh learns it without racing another process for a port.
 * The file appears once the web server has started, that is after every bean is ready.
 */
public class PortFileWriter implements ApplicationListener<WebServerInitializedEvent> {

	private static final Logger ourLog = LoggerFactory.getLogger(PortFileWriter.class);

	private final String myPortFile;

	public PortFileWriter(@Value("${hapi.launcher.port-file:}") String thePortFile) {
		myPortFile = thePortFile;
	}

	@Override
	public void onApplicationEvent(WebServerInitializedEvent theEvent) {
		int port = theEvent.getWebServer().getPort();
		ourLog.info("FHIR server listening on port {}", port);
		if (myPortFile.isEmpty()) {
			return;
		}
		Path target = Path.of(myPortFile);
		Path partial = target.resolveSibling(target.getFileName() + ".partial");
		try {
			// Written whole then renamed: a reader never sees half a number.
			Files.writeString(partial, port + "\n", StandardCharsets.US_ASCII);
			Files.move(partial, target, StandardCopyOption.REPLACE_EXISTING, StandardCopyOption.ATOMIC_MOVE);
		} catch (IOException e) {
			throw new UncheckedIOException("cannot write port file " + myPortFile, e);
		}
	}
}
