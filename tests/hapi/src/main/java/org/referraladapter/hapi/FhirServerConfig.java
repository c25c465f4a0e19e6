package org.referraladapter.hapi;

import ca.uhn.fhir.batch2.jobs.config.Batch2JobsConfig;
import ca.uhn.fhir.context.FhirContext;
import ca.uhn.fhir.context.support.IValidationSupport;
import ca.uhn.fhir.jpa.api.config.JpaStorageSettings;
import ca.uhn.fhir.jpa.api.config.ThreadPoolFactoryConfig;
import ca.uhn.fhir.jpa.api.dao.IFhirSystemDao;
import ca.uhn.fhir.jpa.batch2.JpaBatch2Config;
import ca.uhn.fhir.jpa.binary.api.IBinaryStorageSvc;
import ca.uhn.fhir.jpa.binstore.MemoryBinaryStorageSvcImpl;
import ca.uhn.fhir.jpa.config.HapiJpaConfig;
import ca.uhn.fhir.jpa.config.r4.JpaR4Config;
import ca.uhn.fhir.jpa.config.util.HapiEntityManagerFactoryUtil;
import ca.uhn.fhir.jpa.model.config.PartitionSettings;
import ca.uhn.fhir.jpa.model.config.SubscriptionSettings;
import ca.uhn.fhir.jpa.model.dialect.HapiFhirH2Dialect;
import ca.uhn.fhir.jpa.provider.IJpaSystemProvider;
import ca.uhn.fhir.jpa.provider.JpaCapabilityStatementProvider;
import ca.uhn.fhir.jpa.search.DatabaseBackedPagingProvider;
import ca.uhn.fhir.jpa.searchparam.config.NicknameServiceConfig;
import ca.uhn.fhir.jpa.subscription.channel.config.SubscriptionChannelConfig;
import ca.uhn.fhir.narrative2.NullNarrativeGenerator;
import ca.uhn.fhir.rest.api.EncodingEnum;
import ca.uhn.fhir.rest.server.IncomingRequestAddressStrategy;
import ca.uhn.fhir.rest.server.RestfulServer;
import ca.uhn.fhir.rest.server.provider.ResourceProviderFactory;
import ca.uhn.fhir.rest.server.util.ISearchParamRegistry;
import com.zaxxer.hikari.HikariConfig;
import com.zaxxer.hikari.HikariDataSource;
import jakarta.persistence.EntityManagerFactory;
import org.hibernate.cfg.AvailableSettings;
import org.springframework.beans.factory.annotation.Value;
import org.springframework.beans.factory.config.ConfigurableListableBeanFactory;
import org.springframework.boot.web.servlet.ServletRegistrationBean;
import org.springframework.context.annotation.Bean;
import org.springframework.context.annotation.Configuration;
import org.springframework.context.annotation.Import;
import org.springframework.context.annotation.Primary;
import org.springframework.orm.jpa.JpaTransactionManager;
import org.springframework.orm.jpa.LocalContainerEntityManagerFactoryBean;

import java.util.Properties;
import javax.sql.DataSource;

/**
 * The beans HAPI's JPA configuration leaves to the application: database, entity manager,
 * transaction manager, storage settings, and the RestfulServer servlet mounted at /fhir.
 */
@Configuration
@Import({
	JpaR4Config.class,
	HapiJpaConfig.class,
	JpaBatch2Config.class,
	Batch2JobsConfig.class,
	NicknameServiceConfig.class,
	ThreadPoolFactoryConfig.class,
	// Batch2 sends its work notifications through HAPI's in-memory message broker.
	SubscriptionChannelConfig.class,
})
public class FhirServerConfig {

	@Bean
	public JpaStorageSettings storageSettings() {
		JpaStorageSettings settings = new JpaStorageSettings();
		// HAPI reuses the results of an identical search for 60 s by default; the tests (and
		// an adapter's _lastUpdated cursor) need each search to see the current data. This is
		// the one deliberate difference from the hapiproject/hapi image docker-compose runs.
		settings.setReuseCachedSearchResultsForMillis(null);
		// As that image's defaults (hapi-fhir-jpaserver-starter's AppProperties): deletes and
		// $expunge on, _filter and :contains searches on; HAPI's own defaults for the rest
		// (referential integrity enforced, no external references, no placeholder targets).
		settings.setDeleteEnabled(true);
		settings.setExpungeEnabled(true);
		settings.setFilterParameterEnabled(true);
		settings.setAllowContainsSearches(true);
		// Hibernate Search (Lucene/Elasticsearch) stays off: plain SQL search only.
		settings.setAdvancedHSearchIndexing(false);
		settings.setHibernateSearchIndexFullText(false);
		settings.setHibernateSearchIndexSearchParams(false);
		settings.setStoreResourceInHSearchIndex(false);
		return settings;
	}

	@Bean
	public PartitionSettings partitionSettings() {
		return new PartitionSettings();
	}

	@Bean
	public SubscriptionSettings subscriptionSettings() {
		return new SubscriptionSettings();
	}

	@Bean(destroyMethod = "close")
	public DataSource dataSource(@Value("${hapi.launcher.jdbc-url}") String theJdbcUrl) {
		HikariConfig config = new HikariConfig();
		config.setJdbcUrl(theJdbcUrl);
		config.setUsername("sa");
		config.setPassword("");
		config.setMaximumPoolSize(10);
		config.setPoolName("hapi-h2");
		return new HikariDataSource(config);
	}

	@Bean
	@Primary
	public LocalContainerEntityManagerFactoryBean entityManagerFactory(
			ConfigurableListableBeanFactory theBeanFactory,
			FhirContext theFhirContext,
			JpaStorageSettings theStorageSettings,
			DataSource theDataSource) {
		LocalContainerEntityManagerFactoryBean factory =
				HapiEntityManagerFactoryUtil.newEntityManagerFactory(theBeanFactory, theFhirContext, theStorageSettings);
		factory.setPersistenceUnitName("HAPI_PU");
		factory.setDataSource(theDataSource);

		Properties jpa = new Properties();
		jpa.put(AvailableSettings.DIALECT, HapiFhirH2Dialect.class.getName());
		jpa.put(AvailableSettings.HBM2DDL_AUTO, "update");
		jpa.put(AvailableSettings.FORMAT_SQL, "false");
		jpa.put(AvailableSettings.SHOW_SQL, "false");
		jpa.put(AvailableSettings.STATEMENT_BATCH_SIZE, "20");
		jpa.put(AvailableSettings.USE_QUERY_CACHE, "false");
		jpa.put(AvailableSettings.USE_SECOND_LEVEL_CACHE, "false");
		// Skip classpath scanning for entities: HAPI lists its packages itself.
		jpa.put(AvailableSettings.SCANNER, "org.hibernate.boot.archive.scan.internal.DisabledScanner");
		// Hibernate Search off (its Lucene/Elasticsearch backends are on the classpath).
		jpa.put("hibernate.search.enabled", "false");
		factory.setJpaProperties(jpa);
		return factory;
	}

	@Bean
	@Primary
	public JpaTransactionManager transactionManager(EntityManagerFactory theEntityManagerFactory) {
		return new JpaTransactionManager(theEntityManagerFactory);
	}

	@Bean
	public IBinaryStorageSvc binaryStorageSvc() {
		return new MemoryBinaryStorageSvcImpl();
	}

	@Bean
	public RestfulServer restfulServer(
			IFhirSystemDao<?, ?> theSystemDao,
			ResourceProviderFactory theResourceProviderFactory,
			IJpaSystemProvider theSystemProvider,
			JpaStorageSettings theStorageSettings,
			ISearchParamRegistry theSearchParamRegistry,
			IValidationSupport theValidationSupport,
			DatabaseBackedPagingProvider thePagingProvider) {
		FhirContext ctx = theSystemDao.getContext();
		ctx.setNarrativeGenerator(new NullNarrativeGenerator());

		RestfulServer server = new RestfulServer(ctx);
		server.registerProviders(theResourceProviderFactory.createProviders());
		server.registerProvider(theSystemProvider);
		JpaCapabilityStatementProvider capabilities = new JpaCapabilityStatementProvider(
				server, theSystemDao, theStorageSettings, theSearchParamRegistry, theValidationSupport);
		capabilities.setImplementationDescription("referral-adapter test HAPI FHIR R4 server");
		server.setServerConformanceProvider(capabilities);
		// Page sizes of the hapiproject/hapi image: 20 unless _count says otherwise, no maximum.
		thePagingProvider.setDefaultPageSize(20);
		thePagingProvider.setMaximumPageSize(Integer.MAX_VALUE);
		server.setPagingProvider(thePagingProvider);
		server.setDefaultResponseEncoding(EncodingEnum.JSON);
		server.setServerAddressStrategy(new IncomingRequestAddressStrategy());
		return server;
	}

	@Bean
	public ServletRegistrationBean<RestfulServer> fhirServlet(RestfulServer theServer) {
		ServletRegistrationBean<RestfulServer> registration = new ServletRegistrationBean<>(theServer, "/fhir/*");
		registration.setName("fhir");
		registration.setLoadOnStartup(1);
		return registration;
	}
}
