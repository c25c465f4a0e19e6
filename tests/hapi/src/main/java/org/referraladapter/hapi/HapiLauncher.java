package org.referraladapter.hapi;

import org.springframework.boot.SpringApplication;
import org.springframework.boot.SpringBootConfiguration;
import org.springframework.boot.autoconfigure.ImportAutoConfiguration;
import org.springframework.boot.autoconfigure.context.PropertyPlaceholderAutoConfiguration;
import org.springframework.boot.autoconfigure.web.servlet.ServletWebServerFactoryAutoConfiguration;
import org.springframework.context.annotation.Import;

/**
 * Starts a HAPI FHIR R4 JPA server on H2 in memory, serving FHIR at /fhir.
 *
 * <p>Auto-configuration is an allow-list rather than {@code @EnableAutoConfiguration} with
 * excludes: hapi-fhir-jpaserver-base drags Hibernate, Flyway, Quartz, Thymeleaf, Lucene and the
 * Elasticsearch client onto the classpath, and Boot would otherwise configure each of them (a
 * second entity manager, Flyway migrations on our database, an Elasticsearch sniffer...). HAPI's
 * own Spring configuration classes build everything the FHIR server needs; Boot only has to
 * give us the embedded Tomcat and property placeholders.
 */
@SpringBootConfiguration
@ImportAutoConfiguration({
	PropertyPlaceholderAutoConfiguration.class,
	ServletWebServerFactoryAutoConfiguration.class,
})
@Import({FhirServerConfig.class, PortFileWriter.class})
public class HapiLauncher {

	public static void main(String[] args) {
		SpringApplication app = new SpringApplication(HapiLauncher.class);
		app.run(args);
	}
}
